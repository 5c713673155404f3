use super::*;

fn asserted(email: Option<&str>, verified: bool) -> AssertedIdentity {
    AssertedIdentity {
        idp: "corp".into(),
        issuer: "https://corp.example".into(),
        subject: "sub-1".into(),
        email: email.map(str::to_owned),
        email_verified: verified,
        name: None,
        groups: None,
        method: SignInMethod::Browser,
    }
}

fn policy(jit: bool, unlinkable: UnlinkableEmail) -> LinkPolicy {
    LinkPolicy { email_domains: vec!["corp.example".into()], jit, unlinkable_email: unlinkable }
}

fn account(id: &str) -> EmailMatch {
    EmailMatch { user_id: id.into(), disabled: false, linked_here: false }
}

/// One case of the linking rule: what the provider asserted, what exists, what must happen.
fn check(
    policy: &LinkPolicy,
    asserted: &AssertedIdentity,
    known: Option<(&str, bool)>,
    same_email: &[EmailMatch],
    expected: LinkDecision,
) {
    assert_eq!(
        decide_link(policy, asserted, known, same_email),
        expected,
        "{asserted:?} known={known:?} same_email={same_email:?}"
    );
}

#[test]
fn a_known_identity_is_its_user_whatever_email_it_asserts_now() {
    let open = policy(true, UnlinkableEmail::NewUser);
    // nOAuth: the email claim changed to someone else's; the subject still decides.
    check(
        &open,
        &asserted(Some("victim@corp.example"), true),
        Some(("u-attacker", false)),
        &[account("u-victim")],
        LinkDecision::Known { user_id: "u-attacker".into() },
    );
    check(&open, &asserted(None, false), Some(("u1", true)), &[], LinkDecision::Refuse(SignInRefusal::Disabled));
}

#[test]
fn only_a_verified_email_in_the_providers_own_domain_links_an_account() {
    let refuse = policy(true, UnlinkableEmail::Refuse);
    let new_user = policy(true, UnlinkableEmail::NewUser);
    check(
        &refuse,
        &asserted(Some("Alice@CORP.example"), true),
        None,
        &[account("u-alice")],
        LinkDecision::Link { user_id: "u-alice".into() },
    );
    // Unverified: never the existing account.
    let unverified = asserted(Some("alice@corp.example"), false);
    check(&refuse, &unverified, None, &[account("u-alice")], LinkDecision::Refuse(SignInRefusal::EmailNotLinkable));
    check(&new_user, &unverified, None, &[account("u-alice")], LinkDecision::Create { email: None });
    // Verified, but in a domain another provider is authoritative for.
    let foreign = asserted(Some("bob@partner.example"), true);
    check(&refuse, &foreign, None, &[account("u-bob")], LinkDecision::Refuse(SignInRefusal::EmailNotLinkable));
    check(&new_user, &foreign, None, &[account("u-bob")], LinkDecision::Create { email: None });
    // A look-alike domain is another domain.
    let lookalike = asserted(Some("alice@corp.example.evil.test"), true);
    check(&refuse, &lookalike, None, &[account("u-alice")], LinkDecision::Refuse(SignInRefusal::EmailNotLinkable));
}

#[test]
fn linking_refuses_what_it_cannot_decide_safely() {
    let p = policy(true, UnlinkableEmail::NewUser);
    let alice = asserted(Some("alice@corp.example"), true);
    check(&p, &alice, None, &[account("u1"), account("u2")], LinkDecision::Refuse(SignInRefusal::AmbiguousEmail));
    let disabled = EmailMatch { disabled: true, ..account("u1") };
    check(&p, &alice, None, &[disabled], LinkDecision::Refuse(SignInRefusal::Disabled));
    let taken = EmailMatch { linked_here: true, ..account("u1") };
    check(&p, &alice, None, &[taken], LinkDecision::Refuse(SignInRefusal::AlreadyLinked));
}

#[test]
fn new_identities_are_created_only_with_jit_and_keep_only_an_authoritative_email() {
    check(
        &policy(true, UnlinkableEmail::Refuse),
        &asserted(Some("carol@corp.example"), true),
        None,
        &[],
        LinkDecision::Create { email: Some("carol@corp.example".into()) },
    );
    check(
        &policy(true, UnlinkableEmail::Refuse),
        &asserted(Some("carol@gmail.example"), true),
        None,
        &[],
        LinkDecision::Create { email: None },
    );
    check(
        &policy(false, UnlinkableEmail::Refuse),
        &asserted(Some("carol@corp.example"), true),
        None,
        &[],
        LinkDecision::Refuse(SignInRefusal::NotProvisioned),
    );
}
