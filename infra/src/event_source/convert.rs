//! DynamoDB Streams SDK records → the record type of Lambda's DynamoDB event, so the relay
//! handles exactly what Lambda would hand it.
//!
//! Lambda sets `eventSourceARN` to the stream ARN; the SDK record does not carry it, so it is
//! passed in. moto writes `eventVersion` "1.0" where AWS writes "1.1": it is copied as is, the
//! relay does not read it.

use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::{EventRecord, StreamRecord, StreamViewType, UserIdentity};
use aws_sdk_dynamodbstreams::types::{self as sdk, AttributeValue};
use chrono::{DateTime, Utc};
use serde_dynamo::Item;

/// A record that cannot be expressed as Lambda's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream record {sequence_number}: {problem}")]
pub struct ConvertError {
    /// The record's sequence number, or `none`.
    pub sequence_number: String,
    /// What could not be converted.
    pub problem: String,
}

/// Converts one SDK record read from `stream_arn`.
///
/// # Errors
/// [`ConvertError`] when an attribute has a type this SDK version does not know.
pub fn lambda_record(record: &sdk::Record, stream_arn: &str) -> Result<EventRecord, ConvertError> {
    let change = record.dynamodb.as_ref();
    let sequence_number = change.and_then(|change| change.sequence_number.clone());
    let error = |problem: String| ConvertError {
        sequence_number: sequence_number.clone().unwrap_or_else(|| "none".into()),
        problem,
    };
    let image = |image: Option<&HashMap<String, AttributeValue>>| -> Result<Item, ConvertError> {
        image.map_or_else(|| Ok(Item::default()), |image| item(image).map_err(error))
    };

    let mut stream_record = StreamRecord::default();
    if let Some(change) = change {
        stream_record.approximate_creation_date_time = change
            .approximate_creation_date_time
            .and_then(|at| DateTime::<Utc>::from_timestamp(at.secs(), at.subsec_nanos()))
            .unwrap_or_default();
        stream_record.keys = image(change.keys.as_ref())?;
        stream_record.new_image = image(change.new_image.as_ref())?;
        stream_record.old_image = image(change.old_image.as_ref())?;
        stream_record.sequence_number.clone_from(&change.sequence_number);
        stream_record.size_bytes = change.size_bytes.unwrap_or_default();
        stream_record.stream_view_type = change.stream_view_type.as_ref().and_then(view_type);
    }

    let mut lambda = EventRecord::default();
    lambda.aws_region = record.aws_region.clone().unwrap_or_default();
    lambda.change = stream_record;
    lambda.event_id = record.event_id.clone().unwrap_or_default();
    lambda.event_name = record
        .event_name
        .as_ref()
        .map(|name| name.as_str().to_owned())
        .unwrap_or_default();
    lambda.event_source.clone_from(&record.event_source);
    lambda.event_version.clone_from(&record.event_version);
    lambda.event_source_arn = Some(stream_arn.to_owned());
    lambda.user_identity = record.user_identity.as_ref().map(|identity| {
        let mut user = UserIdentity::default();
        user.type_ = identity.r#type.clone().unwrap_or_default();
        user.principal_id = identity.principal_id.clone().unwrap_or_default();
        user
    });
    Ok(lambda)
}

fn view_type(view: &sdk::StreamViewType) -> Option<StreamViewType> {
    match view {
        sdk::StreamViewType::KeysOnly => Some(StreamViewType::KeysOnly),
        sdk::StreamViewType::NewImage => Some(StreamViewType::NewImage),
        sdk::StreamViewType::OldImage => Some(StreamViewType::OldImage),
        sdk::StreamViewType::NewAndOldImages => Some(StreamViewType::NewAndOldImages),
        _ => None,
    }
}

fn item(image: &HashMap<String, AttributeValue>) -> Result<Item, String> {
    image
        .iter()
        .map(|(name, value)| {
            Ok((
                name.clone(),
                attribute(value).map_err(|problem| format!("{name}: {problem}"))?,
            ))
        })
        .collect::<Result<HashMap<_, _>, String>>()
        .map(Item::from)
}

/// serde_dynamo's own `From` panics on an attribute type the SDK added later; this reports it.
fn attribute(value: &AttributeValue) -> Result<serde_dynamo::AttributeValue, String> {
    use serde_dynamo::AttributeValue as Lambda;
    Ok(match value {
        AttributeValue::S(text) => Lambda::S(text.clone()),
        AttributeValue::N(number) => Lambda::N(number.clone()),
        AttributeValue::B(blob) => Lambda::B(blob.as_ref().to_vec()),
        AttributeValue::Bool(flag) => Lambda::Bool(*flag),
        AttributeValue::Null(null) => Lambda::Null(*null),
        AttributeValue::Ss(set) => Lambda::Ss(set.clone()),
        AttributeValue::Ns(set) => Lambda::Ns(set.clone()),
        AttributeValue::Bs(set) => Lambda::Bs(set.iter().map(|blob| blob.as_ref().to_vec()).collect()),
        AttributeValue::L(list) => Lambda::L(list.iter().map(attribute).collect::<Result<_, _>>()?),
        AttributeValue::M(map) => Lambda::M(
            map.iter()
                .map(|(name, value)| Ok((name.clone(), attribute(value)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => return Err(format!("unknown attribute type {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::dynamodb::Event;
    use aws_sdk_dynamodbstreams::primitives::DateTime as SdkDateTime;
    use aws_sdk_dynamodbstreams::types::{Identity, OperationType, Record};

    use super::*;

    const STREAM: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/staleless-users/stream/2024-11-25T00:00:00.000";

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.into())
    }

    /// The SDK form of the relay's `users_ttl_remove.json` fixture.
    fn ttl_remove() -> Record {
        let keys = HashMap::from([("PK".to_owned(), s("USER#u-2")), ("SK".to_owned(), s("PROFILE"))]);
        let mut old = keys.clone();
        old.extend([
            ("userId".to_owned(), s("u-2")),
            ("email".to_owned(), s("ada@example.com")),
            ("name".to_owned(), s("Ada")),
            ("roles".to_owned(), AttributeValue::L(vec![s("Staff")])),
            ("status".to_owned(), s("active")),
            ("createdAt".to_owned(), s("2024-11-25T00:00:00Z")),
            ("lastLoginAt".to_owned(), s("2024-11-25T00:00:00Z")),
            ("expiresAt".to_owned(), AttributeValue::N("1732400000".into())),
        ]);
        Record::builder()
            .event_id("e000006")
            .event_name(OperationType::Remove)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("us-east-1")
            .dynamodb(
                sdk::StreamRecord::builder()
                    .approximate_creation_date_time(SdkDateTime::from_secs(1_732_500_000))
                    .set_keys(Some(keys))
                    .set_old_image(Some(old))
                    .sequence_number("4100000000000000000006")
                    .size_bytes(200)
                    .stream_view_type(sdk::StreamViewType::NewAndOldImages)
                    .build(),
            )
            .user_identity(
                Identity::builder()
                    .r#type("Service")
                    .principal_id("dynamodb.amazonaws.com")
                    .build(),
            )
            .build()
    }

    #[test]
    fn an_sdk_record_becomes_the_record_lambda_would_deliver() {
        let lambda: Event = serde_json::from_str(include_str!(
            "../../../stream-relay/tests/fixtures/users_ttl_remove.json"
        ))
        .expect("fixture");
        let converted = lambda_record(&ttl_remove(), STREAM).expect("converts");
        assert_eq!(converted, lambda.records[0]);
    }

    #[test]
    fn sub_second_creation_times_are_kept() {
        let mut record = ttl_remove();
        if let Some(change) = record.dynamodb.as_mut() {
            change.approximate_creation_date_time = Some(SdkDateTime::from_millis(1_732_500_000_123));
        }
        let converted = lambda_record(&record, STREAM).expect("converts");
        assert_eq!(
            converted.change.approximate_creation_date_time.timestamp_millis(),
            1_732_500_000_123
        );
    }

    #[test]
    fn nested_and_set_attributes_convert() {
        let value = AttributeValue::M(HashMap::from([
            ("tags".to_owned(), AttributeValue::Ss(vec!["a".into(), "b".into()])),
            (
                "list".to_owned(),
                AttributeValue::L(vec![AttributeValue::Bool(true), AttributeValue::Null(true)]),
            ),
        ]));
        let converted = attribute(&value).expect("converts");
        let serde_dynamo::AttributeValue::M(map) = converted else {
            panic!("a map");
        };
        assert_eq!(
            map.get("tags"),
            Some(&serde_dynamo::AttributeValue::Ss(vec!["a".into(), "b".into()]))
        );
    }
}
