//! `ServerFeatures` and `Gossip`: what clients ask on connecting. `GetSupportedMethods` lists
//! exactly the KurrentDB calls this server implements (clients gate features on the list and
//! parse the version as `major.minor.patch`); `Gossip.Read` describes a cluster of one alive
//! leader at the advertised address, so `+discover` connection strings and multi-host
//! settings find it.

use caskade_proto::kurrentdb::event_store::client as shared;
use caskade_proto::kurrentdb::event_store::client::gossip as gossip_pb;
use caskade_proto::kurrentdb::event_store::client::server_features as features_pb;
use tonic::{Request, Response, Status};

use super::convert::{IdForm, wire_id};

/// The version reported to clients: the KurrentDB release whose v1 API Caskade serves, which
/// clients compare against to enable features.
pub(crate) const REPORTED_VERSION: &str = "24.10.0";

/// The service names as clients look them up: the gRPC full name in lower case.
const STREAMS: &str = "event_store.client.streams.streams";
const FEATURES: &str = "event_store.client.server_features.serverfeatures";
const GOSSIP: &str = "event_store.client.gossip.gossip";
const PERSISTENT: &str = "event_store.client.persistent_subscriptions.persistentsubscriptions";

/// `(service, method, features)` of every KurrentDB call served.
const SUPPORTED: &[(&str, &str, &[&str])] = &[
    (STREAMS, "read", &["position", "events"]),
    (STREAMS, "append", &[]),
    (STREAMS, "batchappend", &["deadline_duration"]),
    (STREAMS, "delete", &[]),
    (STREAMS, "tombstone", &[]),
    (PERSISTENT, "create", &["stream", "all"]),
    (PERSISTENT, "update", &["stream", "all"]),
    (PERSISTENT, "delete", &["stream", "all"]),
    (PERSISTENT, "read", &["stream", "all"]),
    (PERSISTENT, "getinfo", &["stream", "all"]),
    (PERSISTENT, "replayparked", &["stream", "all"]),
    (PERSISTENT, "list", &["stream", "all"]),
    (PERSISTENT, "restartsubsystem", &[]),
    (FEATURES, "getsupportedmethods", &[]),
    (GOSSIP, "read", &[]),
];

/// `event_store.client.server_features.ServerFeatures`.
#[derive(Debug, Clone, Default)]
pub struct ServerFeaturesService;

#[tonic::async_trait]
impl features_pb::server_features_server::ServerFeatures for ServerFeaturesService {
    async fn get_supported_methods(
        &self,
        _request: Request<shared::Empty>,
    ) -> Result<Response<features_pb::SupportedMethods>, Status> {
        let methods = SUPPORTED
            .iter()
            .map(|(service, method, features)| features_pb::SupportedMethod {
                method_name: (*method).to_owned(),
                service_name: (*service).to_owned(),
                features: features.iter().map(|f| (*f).to_owned()).collect(),
            })
            .collect();
        Ok(Response::new(features_pb::SupportedMethods {
            methods,
            event_store_server_version: REPORTED_VERSION.to_owned(),
        }))
    }
}

/// `event_store.client.gossip.Gossip`: one member, this server.
#[derive(Debug, Clone)]
pub struct GossipService {
    /// Where clients should connect.
    advertised: std::net::SocketAddr,
    /// This server's id, new at every start, as a cluster member's is.
    instance_id: uuid::Uuid,
}

impl GossipService {
    /// A cluster of this server alone, reachable at `advertised`.
    #[must_use]
    pub fn new(advertised: std::net::SocketAddr) -> Self {
        GossipService {
            advertised,
            instance_id: uuid::Uuid::new_v4(),
        }
    }
}

#[tonic::async_trait]
impl gossip_pb::gossip_server::Gossip for GossipService {
    async fn read(
        &self,
        _request: Request<shared::Empty>,
    ) -> Result<Response<gossip_pb::ClusterInfo>, Status> {
        let now = chrono::Utc::now();
        let member = gossip_pb::MemberInfo {
            instance_id: Some(wire_id(self.instance_id, IdForm::Structured)),
            time_stamp: now.timestamp_micros() * 10,
            state: gossip_pb::member_info::VNodeState::Leader.into(),
            is_alive: true,
            http_end_point: Some(gossip_pb::EndPoint {
                address: self.advertised.ip().to_string(),
                port: u32::from(self.advertised.port()),
            }),
        };
        Ok(Response::new(gossip_pb::ClusterInfo {
            members: vec![member],
        }))
    }
}
