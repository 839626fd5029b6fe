//! Schemas of the domain's answer types for the OpenAPI document (feature `openapi`).
//!
//! Most types derive theirs next to their definition; the two here serialise by hand,
//! so their schemas are written by hand beside that code's rules.

use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::money::Money;
use crate::values::Status;
use crate::view::StatusCounts;

impl PartialSchema for Money {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Number))
            .format(Some(SchemaFormat::Custom("decimal".into())))
            .description(Some(
                "An exact decimal amount, always written with two fraction digits \
                 (19.99, 20.00); never rounded through a binary float.",
            ))
            .examples([serde_json::json!(19.99)])
            .into()
    }
}

impl ToSchema for Money {}

impl PartialSchema for StatusCounts {
    fn schema() -> RefOr<Schema> {
        let mut object = ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Object))
            .description(Some("Orders per status; all six statuses, zeros included."))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for status in Status::ALL {
            object = object
                .property(
                    status.as_str(),
                    ObjectBuilder::new()
                        .schema_type(SchemaType::Type(Type::Integer))
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                        .minimum(Some(0)),
                )
                .required(status.as_str());
        }
        object.into()
    }
}

impl ToSchema for StatusCounts {}
