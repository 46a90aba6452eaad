//! A test alone in a process of its own, for one that changes what a whole process
//! shares: environment variables the service reads at start-up, the global tracing
//! subscriber. Every integration test of a crate is one binary whose tests run in
//! parallel threads, so such a test reruns itself in a child process of that binary.
//! (Shared by the API's tests through `#[path]`.)

/// The environment variable that tells the child which test it is to run.
const CHILD: &str = "AULA_TEST_ALONE";

/// Held by a heavy test (a whole service, a browser, several processes) while it runs:
/// when each test file was a binary of its own, cargo ran them one after another, and
/// timing-sensitive tests (a browser following a live list) expect that calm.
pub async fn one_heavy_test_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

/// `module` is `module_path!()`, `test` the test function's name. In the test process:
/// runs that test alone in a child process, fails unless the child ran it and it
/// passed, and returns `true` (the caller then returns). In the child: `false`.
pub async fn in_own_process(module: &str, test: &str) -> bool {
    // libtest names a test by its path without the crate: `telemetry::a_sign_up…`.
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    let name = if module.is_empty() {
        test.to_owned()
    } else {
        format!("{module}::{test}")
    };
    if std::env::var(CHILD).is_ok_and(|v| v == name) {
        return false;
    }
    // Every test that needs a process of its own is a heavy one.
    let _heavy = one_heavy_test_at_a_time().await;
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = tokio::process::Command::new(exe)
        .args([
            name.as_str(),
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, &name)
        .kill_on_drop(true)
        .output()
        .await
        .expect("the test binary runs again");
    // Indented, so that the child's summary lines are not taken for the binary's own.
    let indent = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(|line| format!("  | {line}\n"))
            .collect::<String>()
    };
    let (stdout, stderr) = (indent(&output.stdout), indent(&output.stderr));
    // Into this test's output (captured, as the test's own would be).
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        output.status.success()
            && String::from_utf8_lossy(&output.stdout).contains("test result: ok. 1 passed"),
        "{name} failed in its own process ({}):\n--- stdout\n{stdout}--- stderr\n{stderr}",
        output.status
    );
    true
}
