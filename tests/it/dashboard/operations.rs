//! The operators' pages: projections and their rebuilds, webhook endpoints.

use super::*;

/// The projections (status, a rebuild followed to the end) and the webhooks (an
/// endpoint with its health, the message log).
pub(super) async fn projections_and_webhooks(scene: Scene<'_>) {
    let Scene {
        db, browser, shots, ..
    } = scene;
    // Projections: status, and a rebuild followed to the end.
    browser
        .click_then_wait(
            "#tab-projections",
            "!document.getElementById('projections-panel').hidden && document.querySelectorAll('#projections-body tr[data-projection]').length >= 5",
            "the projections",
            shots,
        )
        .await;
    browser
        .click_then_wait(
            "[data-rebuild='course_capacity']",
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
            event_types: Some(vec!["EmailChangeRequested".into()]),
            ..aula_processor::webhooks::NewEndpoint::by_system(
                "https://93.184.216.34/aula-hooks",
                "dashboard test",
            )
        },
        &aula_eventlog::EventMetadata::new(aula_eventlog::Actor::System, None),
    )
    .await
    .unwrap();
    browser
        .click_then_wait(
            "#tab-webhooks",
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
