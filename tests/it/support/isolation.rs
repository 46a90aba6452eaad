//! A test alone in a process of its own, for one that changes what a whole process
//! shares: environment variables the service reads at start-up, the global tracing
//! subscriber. Every integration test of a crate is one binary whose tests run in
//! parallel threads, so such a test reruns itself in a child process of that binary.
//! (Shared by the API's tests through `#[path]`.)

/// The environment variable that tells the child which test it is to run.
const CHILD: &str = "AULA_TEST_ALONE";

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
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Into this test's output (captured, as the test's own would be).
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} failed in its own process ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    true
}
