//! The generated protobuf and gRPC code (build.rs), in modules that mirror the proto packages so
//! that the generated cross-package paths (`super::super::types::v1`) resolve.

#![allow(clippy::all, missing_docs, dead_code)]

pub mod ilphost {
    pub mod types {
        pub mod v1 {
            tonic::include_proto!("ilphost.types.v1");
        }
    }
    pub mod adaptor {
        pub mod v1 {
            tonic::include_proto!("ilphost.adaptor.v1");
        }
    }
    pub mod engine {
        pub mod v1 {
            tonic::include_proto!("ilphost.engine.v1");
        }
    }
    pub mod simledger {
        pub mod v1 {
            tonic::include_proto!("ilphost.simledger.v1");
        }
    }
}

pub mod plugin {
    tonic::include_proto!("plugin");
}

pub use ilphost::adaptor::v1 as adaptor;
pub use ilphost::engine::v1 as engine;
pub use ilphost::simledger::v1 as simledger;
pub use ilphost::types::v1 as types;
