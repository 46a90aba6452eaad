//! Lockouts per account and address: strangers who fail on purpose lock out only their
//! own address; a crowd of addresses reaches the account-wide ceiling, which holds every
//! address but those the owner logged in from recently.

use std::net::IpAddr;

use super::*;

/// An HTTP client bound to its own loopback address (Linux routes all of 127/8 to
/// the loopback interface, so each is a client address of its own).
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(address))
        .build()
        .unwrap()
}

/// `failures` wrong passwords for `email` from each of `addresses`, each answered as a
/// wrong password is (the one that locks the address too).
async fn fail_from(server: &TestServer, email: &str, addresses: &[reqwest::Client], failures: u32) {
    for (n, client) in addresses.iter().enumerate() {
        for attempt in 1..=failures {
            let r = server.login_from(client, email, "wrong password").await;
            assert_reason(&r, "UNAUTHENTICATED", "INVALID_CREDENTIALS");
            assert_eq!(
                r["errors"][0]["message"], "wrong e-mail or password",
                "address {n}, attempt {attempt}"
            );
        }
    }
}

/// The fault: five wrong passwords from anywhere used to lock the account for 15
/// minutes, so anyone who knew an administrator's e-mail could keep them out.
#[tokio::test(flavor = "multi_thread")]
async fn failures_from_other_addresses_do_not_lock_out_the_owner() {
    let (server, a) = TestServer::with_institution("Escola Trancada").await;
    let email = a.manager.email.as_str();
    let strangers: Vec<_> = (1..=6).map(|n| client_from([127, 0, 3, n])).collect();
    // Six failures from each of six addresses: the fifth locks the address, the sixth
    // is refused during the lockout; all answer as a wrong password.
    fail_from(&server, email, &strangers, 6).await;
    // Each stranger's address is locked out (the right password learns it)...
    for stranger in &strangers {
        let r = server.login_from(stranger, email, PASSWORD).await;
        assert_reason(&r, "FORBIDDEN", "USER_LOCKED_OUT");
    }
    // ...the owner's addresses are not.
    let owner = client_from([127, 0, 3, 100]);
    assert_ok(&server.login_from(&owner, email, PASSWORD).await);
    assert_ok(&server.login(email, PASSWORD).await);
    // The owner's successes gave the strangers nothing: still locked out.
    let r = server.login_from(&strangers[0], email, PASSWORD).await;
    assert_reason(&r, "FORBIDDEN", "USER_LOCKED_OUT");
    // After the lockout, each stranger's address has its attempts back.
    server.clock.advance(Span::minutes(16));
    assert_ok(&server.login_from(&strangers[0], email, PASSWORD).await);
    server.stop().await;
}

/// A guesser spread over many addresses is bounded: 50 failures in a row from all of
/// them lock the whole account (all but the owner's recent addresses: see the next
/// test), as any five did before.
#[tokio::test(flavor = "multi_thread")]
async fn a_crowd_of_addresses_reaches_the_account_wide_ceiling() {
    let (server, a) = TestServer::with_institution("Escola Cercada").await;
    let email = a.manager.email.as_str();
    let crowd: Vec<_> = (1..=10).map(|n| client_from([127, 0, 4, n])).collect();
    // Four from each of ten addresses: no address is locked out, nor the account.
    fail_from(&server, email, &crowd, 4).await;
    let owner = client_from([127, 0, 4, 100]);
    assert_ok(&server.login_from(&owner, email, PASSWORD).await);
    // The owner's success started the account's count afresh, not the addresses':
    // one more from the first locks that address out (the account's count is 1).
    fail_from(&server, email, &crowd[..1], 1).await;
    let r = server.login_from(&crowd[0], email, PASSWORD).await;
    assert_reason(&r, "FORBIDDEN", "USER_LOCKED_OUT");
    // Four from each of twelve new addresses (49 in all), then the 50th.
    let more: Vec<_> = (11..=23).map(|n| client_from([127, 0, 4, n])).collect();
    fail_from(&server, email, &more[..12], 4).await;
    fail_from(&server, email, &more[12..], 1).await;
    // The 50th locked the whole account: from any address the owner never logged in
    // from, and for the crowd.
    let new_address = client_from([127, 0, 4, 200]);
    for client in [&new_address, &more[0]] {
        let r = server.login_from(client, email, PASSWORD).await;
        assert_reason(&r, "FORBIDDEN", "USER_LOCKED_OUT");
    }
    // An unknown e-mail and a wrong password still answer alike.
    let unknown = server
        .login_from(&new_address, "nobody@aula.test", "x")
        .await;
    assert_reason(&unknown, "UNAUTHENTICATED", "INVALID_CREDENTIALS");
    let wrong = server.login_from(&new_address, email, "x").await;
    assert_reason(&wrong, "UNAUTHENTICATED", "INVALID_CREDENTIALS");
    server.clock.advance(Span::minutes(16));
    assert_ok(&server.login_from(&new_address, email, PASSWORD).await);
    server.stop().await;
}

/// The fault: the ceiling let a crowd of ten addresses or more keep the owner (an
/// administrator, say) locked out as long as it kept failing. Now an address the owner
/// logged in from recently is not held by the account's lockout: the owner gets in
/// from there, while a new address of the owner's is refused like the crowd's.
#[tokio::test(flavor = "multi_thread")]
async fn a_crowd_cannot_lock_the_owner_out_of_an_address_they_use() {
    let (server, a) = TestServer::with_institution("Escola Sitiada").await;
    let email = a.manager.email.as_str();
    let usual = client_from([127, 0, 5, 100]);
    assert_ok(&server.login_from(&usual, email, PASSWORD).await);
    server.clock.advance(Span::days(3));
    // Strangers from twelve addresses: four failures each (48), then one more from
    // two of them: the 50th locks the whole account.
    let crowd: Vec<_> = (1..=12).map(|n| client_from([127, 0, 5, n])).collect();
    fail_from(&server, email, &crowd, 4).await;
    fail_from(&server, email, &crowd[..2], 1).await;
    let new_address = client_from([127, 0, 5, 200]);
    let r = server.login_from(&new_address, email, PASSWORD).await;
    assert_reason(&r, "FORBIDDEN", "USER_LOCKED_OUT");
    // The owner, from the address they logged in from three days ago, gets in.
    assert_ok(&server.login_from(&usual, email, PASSWORD).await);
    // That lifts the lockout for nobody else: the crowd (with the right password,
    // say it learnt it now) and the new address are still refused.
    for client in [&crowd[5], &new_address] {
        let r = server.login_from(client, email, PASSWORD).await;
        assert_reason(&r, "FORBIDDEN", "USER_LOCKED_OUT");
    }
    // The trusted address keeps its own threshold: five wrong passwords lock it.
    fail_from(&server, email, std::slice::from_ref(&usual), 5).await;
    let r = server.login_from(&usual, email, PASSWORD).await;
    assert_reason(&r, "FORBIDDEN", "USER_LOCKED_OUT");
    server.stop().await;
}

/// The thresholds are the configuration's (`ApiConfig::user_services`, which `aula serve`
/// reads from `AULA_LOGIN_*`), not fixed: before, the server always ran the defaults.
#[tokio::test(flavor = "multi_thread")]
async fn the_thresholds_come_from_the_configuration() {
    let server = TestServer::start_with(|config| {
        config.user_services.max_failed_logins = 2;
    })
    .await;
    let a = server.institution("Escola Configurada").await;
    let email = a.manager.email.as_str();
    let stranger = [client_from([127, 0, 6, 1])];
    fail_from(&server, email, &stranger, 2).await;
    let r = server.login_from(&stranger[0], email, PASSWORD).await;
    assert_reason(&r, "FORBIDDEN", "USER_LOCKED_OUT");
    server.stop().await;
}
