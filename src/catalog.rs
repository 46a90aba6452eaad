//! The event catalog as `docs/events.md` shows it: the domain's descriptions, with the
//! consumers taken from the code that consumes (the processor's reactions and the
//! projections), so the catalog cannot drift from what actually runs.

use aula_domain::catalog::{catalog, render_markdown_of};

pub fn markdown() -> String {
    let mut events = catalog();
    for event in &mut events {
        let mut consumers: Vec<String> =
            aula_projections::consumers_of(event.aggregate, &event.event_type)
                .into_iter()
                .map(|name| format!("projection: {name}"))
                .collect();
        consumers.extend(
            aula_processor::reactions::kinds_for(&event.event_type)
                .iter()
                .map(|kind| format!("task: {kind}")),
        );
        // Every event type can be subscribed to by webhook endpoints (its public form,
        // sensitive fields removed: see docs/webhooks.md), except the endpoints' own
        // operator records.
        if event.aggregate != aula_domain::webhook_endpoint::AGGREGATE_TYPE {
            consumers.push(format!(
                "task: {} (per subscribed webhook endpoint)",
                aula_processor::kinds::WEBHOOK_DELIVER
            ));
        }
        // Chained commands, as the domain documents them.
        consumers.append(&mut event.consumers);
        event.consumers = consumers;
    }
    render_markdown_of(&events)
}
