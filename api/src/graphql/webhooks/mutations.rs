//! The webhook mutations: endpoints created, changed, rotated and deleted, messages
//! resent, endpoints recovered. Staff only, each in its own institution.

use async_graphql::{Context, InputObject, Object};
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub struct WebhookMutation;

/// A new endpoint.
#[derive(InputObject, Debug, Clone)]
pub struct CreateWebhookEndpointInput {
    /// `https://…` (plain http only to hosts the operator allows).
    pub url: String,
    /// Event types of the catalog (`webhookEventTypes`); omitted: all.
    pub event_types: Option<Vec<String>>,
    /// What the endpoint is for (at most 1,000 characters).
    pub description: Option<String>,
    /// A manager's is its own; an admin's may be omitted for a platform-wide endpoint.
    pub institution_id: Option<Uuid>,
    /// How its messages are signed; omitted: `v1`.
    pub signature_scheme: Option<WebhookSignatureScheme>,
}

/// A change to an endpoint; omitted fields stay.
#[derive(InputObject, Debug, Clone, Default)]
pub struct UpdateWebhookEndpointInput {
    /// A new URL (`https://…`).
    pub url: Option<String>,
    /// New event types of the catalog.
    pub event_types: Option<Vec<String>>,
    /// Subscribe to every event type (clears `eventTypes`).
    pub all_event_types: Option<bool>,
    /// A new description.
    pub description: Option<String>,
    /// `true` re-enables a disabled endpoint (clearing its failure run).
    pub enabled: Option<bool>,
}

#[Object]
impl WebhookMutation {
    /// Registers an endpoint; the answer holds its secret, shown this once.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's input.")] input: CreateWebhookEndpointInput,
    ) -> Result<WebhookEndpointSecret, ApiError> {
        let claims = staff(ctx)?;
        let institution = scope(claims, input.institution_id)?;
        let state = state(ctx);
        let (endpoint, signer) = endpoints::create(
            &state.pool,
            &state.config.webhooks,
            endpoints::NewEndpoint {
                institution_id: institution,
                url: input.url,
                event_types: input.event_types,
                description: input.description.unwrap_or_default(),
                created_by: actor(claims),
                created_by_user: Some(claims.user_id),
                signature_scheme: input
                    .signature_scheme
                    .unwrap_or(WebhookSignatureScheme::V1)
                    .into(),
            },
            &metadata(request(ctx), institution),
        )
        .await
        .map_err(webhook_error)?;
        tracing::info!(endpoint = %endpoint.id, actor = %actor(claims), "webhook endpoint registered");
        Ok(WebhookEndpointSecret::of(endpoint, &signer))
    }

    /// Changes an endpoint's URL, event types, description or enabled flag.
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id.")] id: Uuid,
        #[graphql(desc = "The command's input.")] input: UpdateWebhookEndpointInput,
    ) -> Result<WebhookEndpoint, ApiError> {
        let metadata = owned_endpoint(ctx, id).await?;
        let state = state(ctx);
        let event_types = if input.all_event_types == Some(true) {
            Some(None)
        } else {
            input.event_types.map(Some)
        };
        let endpoint = endpoints::update(
            &state.pool,
            &state.config.webhooks,
            id,
            endpoints::EndpointChange {
                url: input.url,
                event_types,
                description: input.description,
                enabled: input.enabled,
            },
            &metadata,
        )
        .await
        .map_err(webhook_error)?;
        Ok(endpoint.into())
    }

    /// Issues a new secret. The current one keeps signing too (both signatures in
    /// `webhook-signature`) for `previousSecretValidForMinutes` (default 1440 = 24 h;
    /// 0 stops it at once). The answer holds the new secret, shown this once.
    async fn rotate_webhook_endpoint_secret(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id.")] id: Uuid,
        #[graphql(
            desc = "How long the previous secret keeps signing beside the new one (0: not at all; at most the configured maximum)."
        )]
        previous_secret_valid_for_minutes: Option<i32>,
        #[graphql(
            desc = "The scheme of the new key (`v1`: a `whsec_` secret; `v1a`: an ed25519 key pair); omitted: the endpoint's current one."
        )]
        signature_scheme: Option<WebhookSignatureScheme>,
    ) -> Result<WebhookEndpointSecret, ApiError> {
        let metadata = owned_endpoint(ctx, id).await?;
        let minutes = previous_secret_valid_for_minutes.unwrap_or(24 * 60);
        if minutes < 0 {
            return Err(ApiError::validation(
                "previousSecretValidForMinutes",
                "NEGATIVE",
                "must be 0 or more",
            ));
        }
        let state = state(ctx);
        let (endpoint, signer) = endpoints::rotate(
            &state.pool,
            &state.config.webhooks,
            id,
            std::time::Duration::from_secs(minutes as u64 * 60),
            signature_scheme.map(Into::into),
            &metadata,
        )
        .await
        .map_err(webhook_error)?;
        Ok(WebhookEndpointSecret::of(endpoint, &signer))
    }

    /// Deletes an endpoint: no new messages, pending ones are not sent.
    async fn delete_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id.")] id: Uuid,
    ) -> Result<bool, ApiError> {
        let metadata = owned_endpoint(ctx, id).await?;
        endpoints::delete(&state(ctx).pool, id, &metadata)
            .await
            .map_err(webhook_error)?;
        Ok(true)
    }

    /// Sends a message again now, with the same `webhook-id` and body.
    async fn resend_webhook_message(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The message (`msg_…` or its uuid).")] message_id: String,
    ) -> Result<WebhookMessage, ApiError> {
        let claims = staff(ctx)?;
        let state = state(ctx);
        let (id, owner) = owned_message(state, claims, &message_id).await?;
        recover::resend(&state.pool, id, &metadata(request(ctx), owner))
            .await
            .map_err(webhook_error)?;
        let (message, _) = endpoints::message(&state.pool, id)
            .await?
            .ok_or_else(|| ApiError::not_found("WEBHOOK_NOT_FOUND", "not found"))?;
        message.try_into()
    }

    /// Starts a background job that sends the endpoint every event since `since` it
    /// wants and did not get (failed messages are sent again, missed ones created).
    async fn recover_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint.")] endpoint_id: Uuid,
        #[graphql(desc = "Send again every event recorded at or after this time.")] since: DateTime<
            Utc,
        >,
    ) -> Result<WebhookRecovery, ApiError> {
        let metadata = owned_endpoint(ctx, endpoint_id).await?;
        let claims = staff(ctx)?;
        let job = recover::start(
            &state(ctx).pool,
            endpoint_id,
            since,
            &actor(claims),
            &metadata,
        )
        .await
        .map_err(webhook_error)?;
        job.try_into()
    }

    /// Stops a running recovery before its next batch.
    async fn cancel_webhook_recovery(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The recovery job's id.")] id: Uuid,
    ) -> Result<WebhookRecovery, ApiError> {
        let state = state(ctx);
        let not_found = || ApiError::not_found("WEBHOOK_NOT_FOUND", "not found");
        let job = recover::job(&state.pool, id).await?.ok_or_else(not_found)?;
        let metadata = owned_endpoint(ctx, job.endpoint_id).await?;
        recover::cancel(&state.pool, id, &metadata).await?;
        recover::job(&state.pool, id)
            .await?
            .ok_or_else(not_found)?
            .try_into()
    }
}
