//! The token vault's changes: a user connects or disconnects an upstream account, and what a
//! route held is forgotten when the route goes. The tokens arrive sealed (by the master key,
//! bound to user, route and issuer); this layer never sees them in the clear.

use portcullis_store::{AuditKind, Mutation, NewAuditEvent, UpstreamCredentialRecord};
use portcullis_types::ScopeSet;

use crate::{Actor, Control, Result};

/// A connected upstream account, its tokens already sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamConnection {
    pub user_id: String,
    pub route: String,
    pub issuer: String,
    pub subject: Option<String>,
    pub scope: ScopeSet,
    pub tokens_sealed: Vec<u8>,
    pub access_expires_at: Option<i64>,
}

impl Control {
    /// Stores a user's (re)connected upstream account, replacing what the vault held for them
    /// and that route.
    pub async fn connect_upstream(&self, actor: &Actor, connection: UpstreamConnection) -> Result<()> {
        let now = self.clock.now();
        let audit = NewAuditEvent {
            user_id: Some(connection.user_id.clone()),
            username: self.username_of(Some(&connection.user_id)).await?,
            route: Some(connection.route.clone()),
            issuer: Some(connection.issuer.clone()),
            subject: connection.subject.clone(),
            reason: Some(format!("scope {}", connection.scope)),
            ..self.event(AuditKind::UpstreamConnected, actor)
        };
        let record = UpstreamCredentialRecord {
            user_id: connection.user_id,
            route: connection.route,
            issuer: connection.issuer,
            subject: connection.subject,
            scope: connection.scope,
            tokens_sealed: connection.tokens_sealed,
            access_expires_at: connection.access_expires_at,
            refresh_lease_until: None,
            created_at: now,
            updated_at: now,
        };
        self.commit(Mutation::SaveUpstreamCredential(Box::new(record)), audit).await?;
        Ok(())
    }

    /// Forgets one user's upstream account for a route (they disconnected it, or Portcullis
    /// did because the upstream refused to refresh it: `reason`). Returns whether there was one.
    pub async fn disconnect_upstream(
        &self,
        actor: &Actor,
        user_id: &str,
        route: &str,
        reason: Option<&str>,
    ) -> Result<bool> {
        let audit = NewAuditEvent {
            user_id: Some(user_id.to_owned()),
            username: self.username_of(Some(user_id)).await?,
            route: Some(route.to_owned()),
            reason: reason.map(str::to_owned),
            ..self.event(AuditKind::UpstreamDisconnected, actor)
        };
        let mutation =
            Mutation::DeleteUpstreamCredentials { user_id: Some(user_id.to_owned()), route: Some(route.to_owned()) };
        Ok(self.commit(mutation, audit).await?.affected > 0)
    }

    /// Forgets every user's upstream account for a route that is no longer configured.
    /// Returns how many there were.
    pub async fn forget_route_credentials(&self, actor: &Actor, route: &str) -> Result<u64> {
        let audit = NewAuditEvent {
            route: Some(route.to_owned()),
            reason: Some("the route was removed".into()),
            ..self.event(AuditKind::UpstreamDisconnected, actor)
        };
        let mutation = Mutation::DeleteUpstreamCredentials { user_id: None, route: Some(route.to_owned()) };
        Ok(self.commit(mutation, audit).await?.affected)
    }

    /// Forgets the upstream accounts (of `user_id`, or everyone's) for routes on which the
    /// user no longer holds a live grant: once no agent of theirs can call the route, nothing
    /// should keep their account there. Returns how many.
    pub async fn forget_ungranted_upstream_accounts(&self, user_id: Option<&str>) -> Result<u64> {
        let Some(prefix) = self.route_resource_prefix.clone() else { return Ok(0) };
        let now = self.clock.now();
        // Counted first, so that a revocation that leaves every account usable records nothing.
        if self.store.count_ungranted_upstream_credentials(&prefix, user_id, now).await? == 0 {
            return Ok(0);
        }
        let audit = NewAuditEvent {
            user_id: user_id.map(str::to_owned),
            username: self.username_of(user_id).await?,
            reason: Some("no agent of the user holds a live grant for the route any more".into()),
            ..self.event(AuditKind::UpstreamDisconnected, &Actor::System)
        };
        let mutation = Mutation::DeleteUngrantedUpstreamCredentials {
            resource_prefix: prefix.to_string(),
            user_id: user_id.map(str::to_owned),
            now,
        };
        Ok(self.commit(mutation, audit).await?.affected)
    }
}
