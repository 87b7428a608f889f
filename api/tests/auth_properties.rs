//! Property tests of token verification through the public [`Authenticator`]: any string, any
//! segments of anything, any one-character change to a valid token are refused; a token signed
//! with the test key whose claims are hostile (wrong types, huge lists, deep nesting, huge or
//! negative times) is refused with the [`AuthError`] its claims call for, or names its `sub`; a
//! roles claim within the caps gives exactly its roles, and one over a cap is refused, every time.
//! Never a panic.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use infra::jwt::{LOCAL_AUDIENCE, LOCAL_ISSUER, claims, unix_now};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};
use staleless_api::CacheMode;
use staleless_api::auth::{
    AuthError, Authenticator, Identity, MAX_ROLE_NAME_CHARS, MAX_ROLES_CLAIM_BYTES, RolesClaimLimit, idp_roles,
};
use staleless_api::model::MAX_LIST_ENTRIES;
use tokio::runtime::Runtime;

/// The verifier of the test key pair and the runtime it runs on, one per test binary.
fn verifier() -> &'static (Runtime, Authenticator, u64) {
    static VERIFIER: OnceLock<(Runtime, Authenticator, u64)> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = common::config(CacheMode::Event);
        let authenticator = runtime.block_on(common::authenticator(&config));
        (runtime, authenticator, config.jwt.leeway_secs)
    })
}

fn authenticate(token: &str) -> Result<Arc<Identity>, AuthError> {
    let (runtime, authenticator, _) = verifier();
    runtime.block_on(authenticator.authenticate(token))
}

/// Any JSON value up to a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(any::<String>(), inner, 0..6).prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A header naming RS256 (or not) and our key (or another, or none), or any JSON.
fn header_json() -> impl Strategy<Value = Value> {
    let alg = prop_oneof![
        3 => Just(json!("RS256")),
        1 => select(vec!["HS256", "none", "RS512", "ES256", "rs256"]).prop_map(Value::from),
        1 => json(),
    ];
    let kid = prop_oneof![
        3 => Just(Some(json!(common::jwt().kid()))),
        1 => Just(None),
        1 => any::<String>().prop_map(|kid| Some(Value::from(kid))),
        1 => json().prop_map(Some),
    ];
    prop_oneof![
        4 => (alg, kid).prop_map(|(alg, kid)| {
            let mut header = json!({ "alg": alg, "typ": "JWT" });
            if let Some(kid) = kid {
                header["kid"] = kid;
            }
            header
        }),
        1 => json(),
    ]
}

/// What a token of these three segments, not signed by our key, calls for: a readable RS256
/// header naming a key other than ours is an unknown key; anything else is invalid (a bad
/// signature under our key, another algorithm, no `kid`, or not a JWT at all: a dot inside the
/// payload or signature moves the header's end).
fn refusal_for(header: &Value, payload: &str, signature: &str) -> AuthError {
    let readable = serde_json::from_value::<jsonwebtoken::Header>(header.clone()).ok();
    match readable {
        Some(jsonwebtoken::Header {
            alg: jsonwebtoken::Algorithm::RS256,
            kid: Some(kid),
            ..
        }) if kid != common::jwt().kid() && !payload.contains('.') && !signature.contains('.') => AuthError::UnknownKey,
        _ => AuthError::Invalid,
    }
}

/// One segment of a token: base64url of any bytes or of any JSON, or any text.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<u8>(), 0..96).prop_map(|bytes| URL_SAFE_NO_PAD.encode(bytes)),
        json().prop_map(|value| URL_SAFE_NO_PAD.encode(value.to_string())),
        any::<String>(),
    ]
}

/// A token signed once with the test key, valid for an hour.
fn valid_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| common::jwt().sign(&alice()))
}

fn alice() -> Value {
    claims(
        "alice",
        Some(&["Staff"]),
        "alice@example.com",
        "Alice",
        Duration::from_hours(1),
    )
}

/// The claims this service or `jsonwebtoken` reads, drawn often, and any other name.
const CLAIMS: [&str; 12] = [
    "sub",
    "exp",
    "nbf",
    "iat",
    "iss",
    "aud",
    "client_id",
    "email",
    "name",
    "custom:roles",
    "cognito:groups",
    "token_use",
];

fn claim_name() -> impl Strategy<Value = String> {
    prop_oneof![3 => select(CLAIMS.as_slice()).prop_map(str::to_owned), 1 => any::<String>()]
}

/// Times as a token might carry them: any second from the epoch to as far after now, range
/// edges, floats, digits in a string.
fn time() -> impl Strategy<Value = Value> {
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    #[allow(clippy::cast_precision_loss)] // seconds since the epoch are exact in an f64
    let later_with_a_fraction = now as f64 + 600.4;
    prop_oneof![
        (0..now.saturating_mul(2)).prop_map(Value::from),
        select(vec![
            json!(-1),
            json!(0),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1.5),
            json!(-0.0),
            json!(1e300),
            json!(-1e300),
            json!(now.to_string()),
            json!(later_with_a_fraction),
        ]),
    ]
}

/// Thousands of roles: a list, a comma list, a JSON-array string.
fn huge() -> impl Strategy<Value = Value> {
    vec("[A-Za-z_]{1,10}", 1_000..5_000).prop_flat_map(|roles| {
        prop_oneof![
            Just(json!(roles)),
            Just(json!(roles.join(","))),
            Just(json!(json!(roles).to_string())),
        ]
    })
}

/// Arrays or objects nested up to far beyond the JSON reader's depth limit of 128.
fn deep() -> impl Strategy<Value = Value> {
    (1usize..400, any::<bool>(), json()).prop_map(|(depth, as_objects, innermost)| {
        (0..depth).fold(innermost, |inner, _| {
            if as_objects {
                json!({ "a": inner })
            } else {
                json!([inner])
            }
        })
    })
}

fn claim_value() -> impl Strategy<Value = Value> {
    prop_oneof![4 => json(), 3 => time(), 1 => huge(), 1 => deep(), 1 => any::<String>().prop_map(Value::from)]
}

/// Valid claims (an ID token's or an access token's, for any `sub`) with one to three claims
/// set to anything (a time, often, for `exp` and `nbf`) or removed.
fn hostile_claims() -> impl Strategy<Value = Map<String, Value>> {
    let base = prop_oneof![Just(alice()), Just(common::access_token_claims(alice()))];
    let sub = prop_oneof![2 => Just(None), 1 => Just(Some(String::new())), 2 => any::<String>().prop_map(Some)];
    let change = prop_oneof![
        3 => (claim_name(), option::of(claim_value())),
        1 => (select(vec!["exp", "nbf"]).prop_map(str::to_owned), time().prop_map(Some)),
    ];
    (base, sub, vec(change, 1..4)).prop_map(|(base, sub, changes)| {
        let mut claims = base.as_object().cloned().unwrap_or_default();
        if let Some(sub) = sub {
            claims.insert("sub".to_owned(), json!(sub));
        }
        for (name, value) in changes {
            match value {
                Some(value) => claims.insert(name, value),
                None => claims.remove(&name),
            };
        }
        claims
    })
}

/// Seconds within which a time check depends on when the test runs.
const CLOCK_SLACK_SECS: u64 = 5;

/// What verifying a token signed with the test key must give for `claims`: the `sub` it names,
/// or the refusal the claims call for, in the order the checks run (the claims this service reads
/// first, then `jsonwebtoken`'s registered-claim checks, then the audience, the `sub` and the
/// roles caps). `None` where the outcome depends on the clock.
fn expected(claims: &Map<String, Value>, now: u64, leeway: u64) -> Option<Result<String, AuthError>> {
    use AuthError::{Expired, Invalid, NotYetValid, WrongAudience, WrongIssuer};
    let present = |name: &str| claims.get(name).filter(|value| !value.is_null());
    let strings = |value: &Value| value.as_array().is_some_and(|items| items.iter().all(Value::is_string));

    // The service's own claims: `sub` and `exp` required, the optional ones (`iat` among them) of
    // the right type.
    let (Some(Value::String(sub)), Some(exp)) = (claims.get("sub"), claims.get("exp").and_then(Value::as_u64)) else {
        return Some(Err(Invalid));
    };
    let typed = present("aud").is_none_or(|aud| aud.is_string() || strings(aud))
        && ["client_id", "email", "name", "custom:roles"]
            .iter()
            .all(|name| present(name).is_none_or(Value::is_string))
        && present("cognito:groups").is_none_or(strings)
        // `iat` orders two tokens' roles claims: any number (a NumericDate may have a fraction).
        && present("iat").is_none_or(Value::is_number);
    if !typed {
        return Some(Err(Invalid));
    }

    // `jsonwebtoken`: `iss` required (a string, or a list sharing the issuer), `nbf` a
    // non-negative number when present (`null` included), then the times, then the issuer.
    let issuer_matches = match present("iss") {
        Some(Value::String(iss)) => iss == LOCAL_ISSUER,
        Some(list) if strings(list) => list
            .as_array()
            .is_some_and(|items| items.contains(&json!(LOCAL_ISSUER))),
        _ => return Some(Err(WrongIssuer)),
    };
    let nbf = match claims.get("nbf") {
        None => None,
        Some(nbf) => match nbf.as_u64().or_else(|| {
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            nbf.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f.round() as u64)
        }) {
            Some(nbf) => Some(nbf),
            None => return Some(Err(Invalid)),
        },
    };
    let (oldest_exp, latest_nbf) = (now - leeway, now + leeway);
    if exp.abs_diff(oldest_exp) <= CLOCK_SLACK_SECS
        || nbf.is_some_and(|nbf| nbf.abs_diff(latest_nbf) <= CLOCK_SLACK_SECS)
    {
        return None;
    }
    if exp < oldest_exp {
        return Some(Err(Expired));
    }
    if nbf.is_some_and(|nbf| nbf > latest_nbf) {
        return Some(Err(NotYetValid));
    }
    if !issuer_matches {
        return Some(Err(WrongIssuer));
    }

    // The audience: `aud` when present, else Cognito's `client_id`.
    let audience_matches = match present("aud") {
        Some(Value::String(aud)) => aud == LOCAL_AUDIENCE,
        Some(list) => list
            .as_array()
            .is_some_and(|items| items.contains(&json!(LOCAL_AUDIENCE))),
        None => present("client_id") == Some(&json!(LOCAL_AUDIENCE)),
    };
    if !audience_matches {
        return Some(Err(WrongAudience));
    }
    // A token that names no user names no cache key either.
    if sub.is_empty() {
        return Some(Err(Invalid));
    }
    // The roles caps, last. Whether a claim is within them is the rule of `idp_roles`, checked
    // against lists of known roles in `roles_claims_give_exactly_their_roles_or_are_refused_by_their_cap`;
    // here it only has to be applied in its place.
    let custom_roles = present("custom:roles").and_then(Value::as_str);
    let groups: Option<Vec<String>> =
        present("cognito:groups").and_then(|groups| serde_json::from_value(groups.clone()).ok());
    if let Err(limit) = idp_roles(custom_roles, groups.as_deref()) {
        return Some(Err(AuthError::RolesClaimOverLimit(limit)));
    }
    Some(Ok(sub.clone()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn any_string_is_refused(
        token in prop_oneof![any::<String>(), vec(segment(), 0..6).prop_map(|parts| parts.join("."))],
    ) {
        let refused = authenticate(&token);
        prop_assert!(matches!(refused, Err(AuthError::Invalid | AuthError::UnknownKey)), "{token:?}: {refused:?}");
    }

    #[test]
    fn three_segments_of_anything_are_refused_as_their_header_calls_for(
        header in header_json(),
        payload in prop_oneof![json().prop_map(|claims| URL_SAFE_NO_PAD.encode(claims.to_string())), segment()],
        signature in segment(),
    ) {
        let token = format!("{}.{payload}.{signature}", URL_SAFE_NO_PAD.encode(header.to_string()));
        prop_assert_eq!(authenticate(&token).err(), Some(refusal_for(&header, &payload, &signature)), "{}", token);
    }

    #[test]
    fn any_one_character_change_to_a_valid_token_is_refused(
        at in any::<usize>(),
        replacement in prop_oneof![
            select("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=".chars().collect::<Vec<_>>()),
            any::<char>(),
        ],
    ) {
        let valid = valid_token();
        let mut chars: Vec<char> = valid.chars().collect();
        let at = at % chars.len();
        prop_assume!(chars[at] != replacement);
        chars[at] = replacement;
        let token: String = chars.into_iter().collect();
        let refused = authenticate(&token);
        prop_assert!(matches!(refused, Err(AuthError::Invalid | AuthError::UnknownKey)), "{token}: {refused:?}");
    }
}

/// Whether `jsonwebtoken` may find the token unreadable as a whole ([`AuthError::Invalid`]) rather
/// than refuse the claim [`expected`] names: it reads `iss` and `nbf` once more, and a value of
/// the wrong type there (a non-empty list, say) can stop its reader mid-token.
fn may_be_unreadable(claims: &Map<String, Value>) -> bool {
    let iss_readable =
        |iss: &Value| iss.is_string() || iss.as_array().is_some_and(|items| items.iter().all(Value::is_string));
    claims
        .get("iss")
        .is_some_and(|iss| !iss.is_null() && !iss_readable(iss))
        || claims
            .get("nbf")
            .is_some_and(|nbf| nbf.as_u64().is_none() && nbf.as_f64().is_none_or(|f| f < 0.0))
}

proptest! {
    // Each case signs with RSA: fewer cases.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn signed_tokens_with_hostile_claims_name_their_user_or_are_refused_as_documented(claims in hostile_claims()) {
        let (_, _, leeway) = verifier();
        let token = common::jwt().sign(&Value::Object(claims.clone()));
        let now = unix_now();
        let outcome = authenticate(&token).map(|identity| identity.user_id.clone());
        if let Some(expected) = expected(&claims, now, *leeway) {
            let unreadable = expected.is_err() && outcome == Err(AuthError::Invalid) && may_be_unreadable(&claims);
            let claims = Value::Object(claims);
            prop_assert!(outcome == expected || unreadable, "{outcome:?}, expected {expected:?} for {claims}");
        }
    }
}

/// How a token carries its roles.
#[derive(Debug, Clone, Copy)]
enum RolesForm {
    /// `cognito:groups`, a JSON list.
    Groups,
    /// `custom:roles` as a comma list.
    CommaList,
    /// `custom:roles` as a JSON-array string.
    JsonArray,
}

/// A role name: mostly short, now and then about [`MAX_ROLE_NAME_CHARS`] long; characters of one
/// to four UTF-8 bytes, and neither a comma nor white space, so it is one entry of a comma list
/// as it is.
fn role_name() -> impl Strategy<Value = String> {
    prop_oneof![
        30 => "[A-Za-z_:é日🦀-]{1,16}",
        1 => "[A-Za-z_:é日🦀-]{120,136}",
    ]
}

/// Roles about the caps: a few; about [`MAX_LIST_ENTRIES`] of them; about as many long ASCII
/// names, whose text is about [`MAX_ROLES_CLAIM_BYTES`]; as many long names of wide characters,
/// within the count and length caps but not the text's; thousands of short ones.
fn roles_list() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        2 => vec(role_name(), 0..=8),
        4 => vec(role_name(), 56..=72),
        1 => vec("[A-Za-z]{118,128}", 60..=64),
        1 => vec("[A-Za-zé日🦀]{100,128}", 56..=72),
        1 => vec("[A-Za-z_]{1,10}", 1_000..5_000),
    ]
}

/// `roles` as `form` carries them, with empty entries and white space around the names when
/// `padded` (a JSON list of groups is never padded: nothing trims it): the claim's name and value.
fn roles_claim(roles: &[String], form: RolesForm, padded: bool) -> (String, Value) {
    match form {
        RolesForm::Groups => ("cognito:groups".to_owned(), json!(roles)),
        RolesForm::CommaList if padded => ("custom:roles".to_owned(), json!(format!(" , {} ,", roles.join(" ,, ")))),
        RolesForm::CommaList => ("custom:roles".to_owned(), json!(roles.join(","))),
        RolesForm::JsonArray if padded => {
            let entries: Vec<String> = roles
                .iter()
                .map(|role| format!(" {role}\t"))
                .chain([String::new()])
                .collect();
            ("custom:roles".to_owned(), json!(json!(entries).to_string()))
        }
        RolesForm::JsonArray => ("custom:roles".to_owned(), json!(json!(roles).to_string())),
    }
}

/// What a claim of exactly `roles` must give, in the order the caps are checked: the claim's
/// text (a `custom:roles` string) over [`MAX_ROLES_CLAIM_BYTES`], more than [`MAX_LIST_ENTRIES`]
/// roles, a name over [`MAX_ROLE_NAME_CHARS`] characters; else the roles themselves.
fn roles_outcome(roles: &[String], claim: &Value) -> Result<Option<Vec<String>>, AuthError> {
    let limit = if claim.as_str().is_some_and(|text| text.len() > MAX_ROLES_CLAIM_BYTES) {
        Some(RolesClaimLimit::Bytes)
    } else if roles.len() > MAX_LIST_ENTRIES {
        Some(RolesClaimLimit::Roles)
    } else if roles.iter().any(|role| role.chars().count() > MAX_ROLE_NAME_CHARS) {
        Some(RolesClaimLimit::RoleName)
    } else {
        None
    };
    limit.map_or_else(
        || Ok(Some(roles.to_vec())),
        |limit| Err(AuthError::RolesClaimOverLimit(limit)),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn roles_claims_give_exactly_their_roles_or_are_refused_by_their_cap(
        roles in roles_list(),
        form in select(vec![RolesForm::Groups, RolesForm::CommaList, RolesForm::JsonArray]),
        padded in any::<bool>(),
    ) {
        let (name, claim) = roles_claim(&roles, form, padded);
        let mut claims = match form {
            RolesForm::Groups => common::access_token_claims(alice()),
            RolesForm::CommaList | RolesForm::JsonArray => alice(),
        };
        claims[name] = claim.clone();
        let token = common::jwt().sign(&claims);
        let expected = roles_outcome(&roles, &claim);
        let outcome = authenticate(&token).map(|identity| identity.idp_roles.clone());
        prop_assert_eq!(&outcome, &expected, "{:?} of {} roles", form, roles.len());
        // Refusals are not cached, and acceptances are: the same token, the same answer.
        prop_assert_eq!(authenticate(&token).map(|identity| identity.idp_roles.clone()), outcome);
    }
}
