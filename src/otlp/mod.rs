//! OpenTelemetry Protocol (OTLP) support shared by the `otlp` source and the `otlp` sink: the
//! mapping between OTLP messages and the event model ([`convert`]), the OTLP/JSON decoding
//! ([`json`]). TLS lives in [`crate::net::tls`].
//!
//! The OTLP message types are the ones `opentelemetry-proto` generates with prost; they are
//! re-exported here under short names so the rest of the crate has one place to import from.

pub mod convert;
pub mod json;
pub mod signal;

pub use signal::Signal;

pub use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
pub use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
pub use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
pub use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
pub use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
pub use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// The generated OTLP data types (`common`, `resource`, `trace`, `logs`).
pub mod proto {
    pub use opentelemetry_proto::tonic::common::v1 as common;
    pub use opentelemetry_proto::tonic::logs::v1 as logs;
    pub use opentelemetry_proto::tonic::resource::v1 as resource;
    pub use opentelemetry_proto::tonic::trace::v1 as trace;
}

/// The gRPC method paths of the two services the source serves.
pub const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
pub const LOGS_EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// `google.rpc.Status`, the error body of OTLP/HTTP responses and the details of gRPC errors.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`: how long a client should wait before retrying. OTLP clients retry
/// `RESOURCE_EXHAUSTED` only when the status carries one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The `grpc-status-details-bin` payload of a status that asks the client to retry after
/// `seconds`.
pub fn retry_details(code: i32, message: &str, seconds: i64) -> Vec<u8> {
    use prost::Message;
    let info = RetryInfo { retry_delay: Some(ProtoDuration { seconds, nanos: 0 }) };
    RpcStatus {
        code,
        message: message.to_owned(),
        details: vec![ProtoAny {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".to_owned(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}
