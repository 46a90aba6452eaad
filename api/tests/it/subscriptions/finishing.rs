//! A mutation sent over `/graphql/ws` runs to its end when its socket closes.

use super::*;

/// `createStudent` reserves the address, records the account, then the student: sent
/// over a socket that is reset while the mutation waits for the log, it still records
/// both. Before (session 20): the socket's close stopped the mutation where it stood,
/// here with the address reserved and neither the account nor the student recorded
/// (over HTTP, `mutations::a_mutation_whose_answer_times_out_still_finishes`).
#[tokio::test(flavor = "multi_thread")]
async fn a_mutation_whose_socket_is_reset_still_finishes() {
    let server = TestServer::start().await;
    let school = server.institution("Escola Oeste").await;
    let email = "socket.student@aula.test";
    let mut socket = initialised(&server, &school.manager.token).await;
    // Appends wait while this transaction holds the log: the mutation outlives its socket.
    let mut hold = server.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN SHARE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();
    let mutation = "mutation($input: CreateStudentInput!) { createStudent(input: $input) { id } }";
    let input = json!({ "name": "Ivo Cortado", "email": email, "birthDate": "2004-05-06" });
    let payload = json!({ "query": mutation, "variables": { "input": input } });
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": payload }),
    )
    .await;
    // The mutation has started once its address is reserved; it then waits for the log.
    let reserved = "SELECT count(*) FROM user_emails WHERE email = $1";
    assert_eq!(server.count_once_one(reserved, email).await, 1, "reserved");

    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = socket.get_ref() else {
        panic!("a plain TCP socket");
    };
    tcp.set_zero_linger().unwrap();
    drop(socket); // a TCP reset, no close frame
                  // Time for the server to read the reset and drop the socket's operations.
    tokio::time::sleep(Duration::from_millis(500)).await;
    hold.commit().await.unwrap();

    let account = "SELECT count(*) FROM events WHERE event_type = 'UserCreated'
                   AND payload->>'email' = $1";
    let student = "SELECT count(*) FROM events WHERE event_type = 'StudentCreated'
                   AND payload->>'email' = $1";
    assert_eq!(
        server.count_once_one(account, email).await,
        1,
        "the account"
    );
    assert_eq!(
        server.count_once_one(student, email).await,
        1,
        "the student"
    );
    server.stop().await;
}
