//! The operators' pages: projections and their rebuilds, webhook endpoints.

use super::*;

/// The projections (status, a rebuild followed to the end) and the webhooks (an
/// endpoint with its health, the message log).
pub(super) async fn projections_and_webhooks(scene: Scene<'_>) {
    let Scene {
        db, browser, shots, ..
    } = scene;
    // Projections: status, and a rebuild followed to the end.
    browser.eval(&click("#tab-projections")).await;
    browser
        .wait_for(
            "!document.getElementById('projections-panel').hidden && document.querySelectorAll('#projections-body tr[data-projection]').length >= 5",
            "the projections",
            shots,
        )
        .await;
    browser
        .eval(&click("[data-rebuild='course_capacity']"))
        .await;
    browser
        .wait_for(
            "document.querySelector(\"[data-projection='course_capacity'] [data-rebuild-state='done']\") !== null",
            "the rebuild to finish",
            shots,
        )
        .await;
    browser.screenshot(&shots.join("07-projections.png")).await;

    // Webhooks: an endpoint with its health, and the (empty) message log.
    let (endpoint, _) = aula_processor::webhooks::endpoints::create(
        &db.pool,
        &aula_processor::webhooks::WebhookConfig::default(),
        aula_processor::webhooks::NewEndpoint {
            institution_id: None,
            url: "https://93.184.216.34/aula-hooks".into(),
            event_types: Some(vec!["EmailChangeRequested".into()]),
            description: "dashboard test".into(),
            created_by: "system".into(),
            created_by_user: None,
            signature_scheme: aula_processor::webhooks::SignatureScheme::V1,
        },
        &aula_eventlog::EventMetadata::new(aula_eventlog::Actor::System, None),
    )
    .await
    .unwrap();
    browser.eval(&click("#tab-webhooks")).await;
    browser
        .wait_for(
            &format!(
                "!document.getElementById('webhooks-panel').hidden \
                 && document.querySelector(\"#webhook-endpoints-body tr[data-endpoint='{}'] .signing\")?.textContent === 'v1' \
                 && document.getElementById('webhook-messages-body').textContent.includes('No message matches')",
                endpoint.id
            ),
            "the webhooks tab",
            shots,
        )
        .await;
    browser.screenshot(&shots.join("07b-webhooks.png")).await;
}
