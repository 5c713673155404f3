//! Who a federated sign-in is: the account-linking rule, in one place.
//!
//! A federated identity is (identity provider, `iss`, `sub`), never an email address: the
//! email claim of some providers is mutable and unverified (the "nOAuth" class), so an email
//! alone never decides who someone is. An identity seen before is its user, whatever email it
//! asserts today. A new identity reaches an existing account only when the provider asserts
//! `email_verified = true` for an address in one of the domains that provider is
//! authoritative for (`email_domains`), and exactly one account has that address; anything
//! else becomes a new user (or is refused, as configured), never an existing account.

use portcullis_crypto::random_identifier;
use portcullis_store::{AuditKind, AuditOutcome, FederatedIdentityRecord, Mutation, NewAuditEvent, UserRecord};

use crate::{Actor, Control, ControlError, Result};

/// What an identity provider asserted about who signed in, from a verified ID token (or
/// identity assertion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertedIdentity {
    /// The identity provider's configured name.
    pub idp: String,
    /// The ID token's `iss` (for a multi-tenant provider, the tenant's issuer).
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    /// Only a literal `true` from the provider counts.
    pub email_verified: bool,
    pub name: Option<String>,
    /// The groups asserted; `None` when the statement carries none (the ones remembered from
    /// the last sign-in stay).
    pub groups: Option<Vec<String>>,
    pub method: SignInMethod,
}

/// How the identity provider vouched for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInMethod {
    /// The user signed in at the provider in their browser (OpenID Connect).
    Browser,
    /// The provider issued an identity assertion grant to an agent (SEP-990).
    IdentityAssertion,
}

impl SignInMethod {
    const fn describe(self) -> &'static str {
        match self {
            Self::Browser => "signed in at the identity provider",
            Self::IdentityAssertion => "identity assertion grant (SEP-990)",
        }
    }
}

/// When a new identity's email matches an account but may not be linked to it (unverified, or
/// not in a domain this provider is authoritative for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnlinkableEmail {
    /// Refuse the sign-in, so an administrator can look (the default).
    #[default]
    Refuse,
    /// Make a new user, who does not get the existing account's email.
    NewUser,
}

/// An identity provider's rules for who may become which user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkPolicy {
    /// The domains this provider is authoritative for, lower case.
    pub email_domains: Vec<String>,
    /// Create users at their first sign-in.
    pub jit: bool,
    pub unlinkable_email: UnlinkableEmail,
}

impl LinkPolicy {
    /// The asserted email, if the provider verified it and is authoritative for its domain.
    pub fn authoritative_email<'a>(&self, asserted: &'a AssertedIdentity) -> Option<&'a str> {
        let email = asserted.email.as_deref().filter(|_| asserted.email_verified)?;
        portcullis_types::email_in_domains(email, &self.email_domains).then_some(email)
    }
}

/// Why a federated sign-in was refused. The user sees a page that says what to do; the audit
/// record says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInRefusal {
    #[error("the account is disabled")]
    Disabled,
    #[error("no account exists for this identity and this identity provider does not create accounts")]
    NotProvisioned,
    #[error(
        "an account already uses this email address, but the identity provider did not assert a verified address in a domain it is authoritative for"
    )]
    EmailNotLinkable,
    #[error("more than one account uses this email address")]
    AmbiguousEmail,
    #[error("the account with this email address is already linked to another identity at this identity provider")]
    AlreadyLinked,
}

/// What the linking rule decided for one sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkDecision {
    /// The identity was seen before: its user.
    Known {
        user_id: String,
    },
    /// A new identity for an existing account.
    Link {
        user_id: String,
    },
    /// A new user, with the email only when it is authoritative.
    Create {
        email: Option<String>,
    },
    Refuse(SignInRefusal),
}

/// An account that has the asserted email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailMatch {
    pub user_id: String,
    pub disabled: bool,
    /// Whether it already has an identity at this identity provider.
    pub linked_here: bool,
}

/// The linking rule. `known` is the user of the identity if it was seen before (and whether
/// they are disabled); `same_email` the accounts with the asserted address.
pub fn decide_link(
    policy: &LinkPolicy,
    asserted: &AssertedIdentity,
    known: Option<(&str, bool)>,
    same_email: &[EmailMatch],
) -> LinkDecision {
    if let Some((user_id, disabled)) = known {
        return if disabled {
            LinkDecision::Refuse(SignInRefusal::Disabled)
        } else {
            LinkDecision::Known { user_id: user_id.to_owned() }
        };
    }
    let authoritative = policy.authoritative_email(asserted);
    match (authoritative, same_email) {
        (_, []) => {}
        (Some(_), [only]) if only.disabled => return LinkDecision::Refuse(SignInRefusal::Disabled),
        (Some(_), [only]) if only.linked_here => return LinkDecision::Refuse(SignInRefusal::AlreadyLinked),
        (Some(_), [only]) => return LinkDecision::Link { user_id: only.user_id.clone() },
        (Some(_), _) => return LinkDecision::Refuse(SignInRefusal::AmbiguousEmail),
        (None, _) if policy.unlinkable_email == UnlinkableEmail::Refuse => {
            return LinkDecision::Refuse(SignInRefusal::EmailNotLinkable);
        }
        (None, _) => {}
    }
    if !policy.jit {
        return LinkDecision::Refuse(SignInRefusal::NotProvisioned);
    }
    LinkDecision::Create { email: authoritative.map(str::to_owned) }
}

/// The outcome of a federated sign-in for the caller: the user, or why not.
pub type FederatedSignIn = std::result::Result<UserRecord, SignInRefusal>;

impl Control {
    /// Decides who a verified federated sign-in is (creating or linking the user as the
    /// provider's policy allows), and records the sign-in, successful or refused, in the audit
    /// trail with the identity provider, issuer and subject.
    pub async fn federated_sign_in(
        &self,
        policy: &LinkPolicy,
        asserted: &AssertedIdentity,
        source: Option<std::net::IpAddr>,
    ) -> Result<FederatedSignIn> {
        match self.federated_sign_in_once(policy, asserted, source).await {
            // Another request made this identity (or linked that account) in between: decide
            // again, now that it exists.
            Err(ControlError::Conflict(_)) => self.federated_sign_in_once(policy, asserted, source).await,
            other => other,
        }
    }

    async fn federated_sign_in_once(
        &self,
        policy: &LinkPolicy,
        asserted: &AssertedIdentity,
        source: Option<std::net::IpAddr>,
    ) -> Result<FederatedSignIn> {
        let store = self.store();
        let identity = store.find_federated_identity(&asserted.idp, &asserted.issuer, &asserted.subject).await?;
        let mut known = match &identity {
            Some(i) => store.find_user(&i.user_id).await?,
            None => None,
        };
        let mut same_email = Vec::new();
        if known.is_none()
            && let Some(email) = asserted.email.as_deref()
        {
            for user in store.find_users_by_email(email).await? {
                let linked_here = store.federated_identities_of(&user.id).await?.iter().any(|i| i.idp == asserted.idp);
                same_email.push(EmailMatch { user_id: user.id, disabled: user.disabled_at.is_some(), linked_here });
            }
            // A simultaneous first sign-in of this very identity may have made it between the
            // two reads (its account then looks "linked to another identity"): look again.
            if let Some(made) =
                store.find_federated_identity(&asserted.idp, &asserted.issuer, &asserted.subject).await?
            {
                known = store.find_user(&made.user_id).await?;
                same_email.clear();
            }
        }
        let decision =
            decide_link(policy, asserted, known.as_ref().map(|u| (u.id.as_str(), u.is_disabled())), &same_email);
        let now = self.clock.now();
        let identity_for = |user_id: &str| FederatedIdentityRecord {
            idp: asserted.idp.clone(),
            issuer: asserted.issuer.clone(),
            subject: asserted.subject.clone(),
            user_id: user_id.to_owned(),
            email: asserted.email.clone(),
            groups: asserted.groups.clone().unwrap_or_default(),
            groups_at: asserted.groups.as_ref().map(|_| now),
            created_at: now,
            last_sign_in_at: now,
        };
        let user = match decision {
            LinkDecision::Refuse(refusal) => {
                let user_id =
                    known.as_ref().map(|u| u.id.clone()).or_else(|| match (&refusal, same_email.as_slice()) {
                        (SignInRefusal::Disabled | SignInRefusal::AlreadyLinked, [only]) => Some(only.user_id.clone()),
                        _ => None,
                    });
                self.record_federated_failure(asserted, user_id.as_deref(), &refusal.to_string(), source).await?;
                return Ok(Err(refusal));
            }
            LinkDecision::Known { .. } => known.ok_or(ControlError::Invalid("the known user vanished".into()))?,
            LinkDecision::Link { user_id } => {
                let user = store.find_user(&user_id).await?.ok_or(ControlError::UserNotFound(user_id))?;
                let audit = NewAuditEvent {
                    user_id: Some(user.id.clone()),
                    username: Some(user.username.clone()),
                    reason: Some("linked by a verified email address in the identity provider's domain".into()),
                    ..self.federated_event(AuditKind::UserLinked, asserted, source)
                };
                self.commit(Mutation::LinkIdentity(Box::new(identity_for(&user.id))), audit).await?;
                user
            }
            LinkDecision::Create { email } => {
                let username = self.federated_username(asserted, email.as_deref()).await?;
                let user = UserRecord {
                    id: random_identifier(12)?,
                    username,
                    display_name: asserted.name.clone(),
                    email,
                    password_hash: None,
                    is_admin: false,
                    disabled_at: None,
                    created_at: now,
                    updated_at: now,
                };
                let audit = NewAuditEvent {
                    user_id: Some(user.id.clone()),
                    username: Some(user.username.clone()),
                    reason: Some("created at first sign-in".into()),
                    ..self.federated_event(AuditKind::UserAdded, asserted, source)
                };
                let mutation = Mutation::InsertFederatedUser {
                    user: Box::new(user.clone()),
                    identity: Box::new(identity_for(&user.id)),
                };
                self.commit(mutation, audit).await?;
                user
            }
        };
        let audit = NewAuditEvent {
            user_id: Some(user.id.clone()),
            username: Some(user.username.clone()),
            reason: Some(asserted.method.describe().to_owned()),
            ..self.federated_event(AuditKind::SignInSucceeded, asserted, source)
        };
        let mutation = Mutation::RecordFederatedSignIn {
            idp: asserted.idp.clone(),
            issuer: asserted.issuer.clone(),
            subject: asserted.subject.clone(),
            email: asserted.email.clone(),
            groups: asserted.groups.clone(),
        };
        self.commit(mutation, audit).await?;
        portcullis_telemetry::sign_in(&asserted.idp, portcullis_telemetry::SignIn::Succeeded);
        Ok(Ok(user))
    }

    /// A federated sign-in that failed before or after the identity was known: the identity
    /// provider's error, a state or nonce that did not match, an ID token that did not verify,
    /// or a refusal of the linking rule. `asserted` carries what is known (at least the IdP).
    pub async fn record_federated_failure(
        &self,
        asserted: &AssertedIdentity,
        user_id: Option<&str>,
        reason: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<()> {
        let audit = NewAuditEvent {
            user_id: user_id.map(str::to_owned),
            username: self.username_of(user_id).await?,
            outcome: AuditOutcome::Failed,
            reason: Some(reason.chars().take(300).collect()),
            ..self.federated_event(AuditKind::SignInFailed, asserted, source)
        };
        self.commit(Mutation::RecordOnly, audit).await?;
        portcullis_telemetry::sign_in(&asserted.idp, portcullis_telemetry::SignIn::Failed);
        Ok(())
    }

    /// The identity provider logged a user out (OpenID Connect Back-Channel Logout): their
    /// browser sessions end and every grant they gave is revoked, on every node.
    pub async fn sign_out_everywhere(
        &self,
        idp: &str,
        user_id: &str,
        subject: Option<&str>,
        source: Option<std::net::IpAddr>,
    ) -> Result<u64> {
        let actor = Actor::IdentityProvider { name: idp.to_owned(), source };
        let audit = NewAuditEvent {
            user_id: Some(user_id.to_owned()),
            username: self.username_of(Some(user_id)).await?,
            target: Some(idp.to_owned()),
            subject: subject.map(str::to_owned),
            reason: Some("logged out by the identity provider".into()),
            ..self.event(AuditKind::SignedOutByIdp, &actor)
        };
        let reason = "the identity provider logged the user out".to_owned();
        let committed = self.commit(Mutation::SignOutEverywhere { user_id: user_id.to_owned(), reason }, audit).await?;
        Ok(committed.affected)
    }

    fn federated_event(
        &self,
        kind: AuditKind,
        asserted: &AssertedIdentity,
        source: Option<std::net::IpAddr>,
    ) -> NewAuditEvent {
        let actor = Actor::IdentityProvider { name: asserted.idp.clone(), source };
        NewAuditEvent {
            target: Some(asserted.idp.clone()),
            issuer: (!asserted.issuer.is_empty()).then(|| asserted.issuer.clone()),
            subject: (!asserted.subject.is_empty()).then(|| asserted.subject.chars().take(255).collect()),
            ..self.event(kind, &actor)
        }
    }

    /// A username for a new federated user: the authoritative email when it is free, else the
    /// provider's name and the subject, with a random suffix if even that is taken.
    async fn federated_username(&self, asserted: &AssertedIdentity, email: Option<&str>) -> Result<String> {
        let store = self.store();
        if let Some(email) = email
            && store.find_user_by_username(email).await?.is_none()
        {
            return Ok(email.to_owned());
        }
        let base: String =
            format!("{}:{}", asserted.idp, asserted.subject).chars().filter(|c| !c.is_whitespace()).take(90).collect();
        if store.find_user_by_username(&base).await?.is_none() {
            return Ok(base);
        }
        Ok(format!("{base}-{}", random_identifier(4)?))
    }
}

#[cfg(test)]
#[path = "federation_tests.rs"]
mod tests;
