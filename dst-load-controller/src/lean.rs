//! Watched Kubernetes objects decoded lean: without `metadata.managedFields`,
//! and for workloads without anything but their metadata.
//!
//! The ground truth's watches decode every EndpointSlice and every stamped
//! workload the apiserver sends while churn runs. `managedFields` (every
//! field manager's field set, decoded by `k8s-openapi` into JSON values) and a
//! Deployment's pod template and status were most of that work: a fifth of
//! the client's CPU on `hack/bench.py controller`. Nothing here reads them, so
//! they are skipped on the wire; every other field decodes as `k8s-openapi`
//! decodes it.

use std::{borrow::Cow, collections::BTreeMap, fmt, marker::PhantomData};

use k8s_openapi::{
    api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
};
use kube::runtime::watcher::Event;
use serde::{Deserialize, Deserializer};

/// `ObjectMeta` as decoded here: every field but `managedFields`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl From<Meta> for ObjectMeta {
    fn from(m: Meta) -> Self {
        Self {
            annotations: m.annotations,
            creation_timestamp: m.creation_timestamp,
            deletion_grace_period_seconds: m.deletion_grace_period_seconds,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            generate_name: m.generate_name,
            generation: m.generation,
            labels: m.labels,
            managed_fields: None,
            name: m.name,
            namespace: m.namespace,
            owner_references: m.owner_references,
            resource_version: m.resource_version,
            self_link: m.self_link,
            uid: m.uid,
        }
    }
}

fn meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    Meta::deserialize(d).map(Into::into)
}

/// Delegates `kube::Resource` to `K`'s `k8s-openapi` constants.
macro_rules! resource_of {
    ($wrapper:ident, $metadata_api:expr, |$s:ident| $meta:expr, |$m:ident| $meta_mut:expr, $($bound:tt)*) => {
        impl<K: k8s_openapi::Resource $($bound)*> kube::Resource for $wrapper<K> {
            type DynamicType = ();
            type Scope = K::Scope;

            fn kind(_: &()) -> Cow<'_, str> {
                K::KIND.into()
            }

            fn group(_: &()) -> Cow<'_, str> {
                K::GROUP.into()
            }

            fn version(_: &()) -> Cow<'_, str> {
                K::VERSION.into()
            }

            fn api_version(_: &()) -> Cow<'_, str> {
                K::API_VERSION.into()
            }

            fn plural(_: &()) -> Cow<'_, str> {
                K::URL_PATH_SEGMENT.into()
            }

            fn meta(&self) -> &ObjectMeta {
                let $s = self;
                $meta
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                let $m = self;
                $meta_mut
            }

            fn metadata_api() -> bool {
                $metadata_api
            }
        }
    };
}

/// A `K`'s metadata alone: asked for as `PartialObjectMetadata` (the
/// apiserver sends no spec or status) and decoded without `managedFields`.
#[derive(Deserialize)]
#[serde(bound = "")]
pub struct MetaOnly<K> {
    /// The object's metadata, `managedFields` left out.
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

impl<K> MetaOnly<K> {
    /// An object of kind `K` with this metadata.
    pub fn new(metadata: ObjectMeta) -> Self {
        Self {
            metadata,
            kind: PhantomData,
        }
    }
}

impl<K> Clone for MetaOnly<K> {
    fn clone(&self) -> Self {
        Self::new(self.metadata.clone())
    }
}

impl<K> fmt::Debug for MetaOnly<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaOnly")
            .field("metadata", &self.metadata)
            .finish()
    }
}

resource_of!(MetaOnly, true, |s| &s.metadata, |m| &mut m.metadata,);

/// A whole `K` decoded without `metadata.managedFields`.
#[derive(Clone, Debug, PartialEq)]
pub struct Lean<K>(pub K);

resource_of!(
    Lean,
    false,
    |s| s.0.metadata(),
    |m| m.0.metadata_mut(),
    + k8s_openapi::Metadata<Ty = ObjectMeta>
);

impl<'de> Deserialize<'de> for Lean<EndpointSlice> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Slice {
            address_type: String,
            // `null` for a slice without endpoints, as k8s-openapi reads it.
            endpoints: Option<Vec<Endpoint>>,
            #[serde(deserialize_with = "meta", default)]
            metadata: ObjectMeta,
            ports: Option<Vec<EndpointPort>>,
        }
        let s = Slice::deserialize(d)?;
        Ok(Self(EndpointSlice {
            address_type: s.address_type,
            endpoints: s.endpoints.unwrap_or_default(),
            metadata: s.metadata,
            ports: s.ports,
        }))
    }
}

/// The event with its object unwrapped.
pub fn unwrap<K>(event: Event<Lean<K>>) -> Event<K> {
    match event {
        Event::Apply(Lean(k)) => Event::Apply(k),
        Event::Delete(Lean(k)) => Event::Delete(k),
        Event::Init => Event::Init,
        Event::InitApply(Lean(k)) => Event::InitApply(k),
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::Resource;

    use super::*;

    /// An EndpointSlice as the apiserver sends it, `managedFields` included.
    const SLICE: &str = r#"{
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": "web-abc12", "generateName": "web-", "namespace": "ns",
            "uid": "u-1", "resourceVersion": "42", "generation": 3,
            "creationTimestamp": "2026-12-06T10:00:00Z",
            "labels": {"kubernetes.io/service-name": "web"},
            "annotations": {"a": "b"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                 "uid": "u-0", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                               "apiVersion": "discovery.k8s.io/v1", "time": "2026-12-06T10:00:00Z",
                               "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:addressType": {}, "f:endpoints": {}}}]
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "namespace": "ns", "name": "web-1", "uid": "p-1"},
                       "nodeName": "kwok-node-0", "hostname": "web-1"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }"#;

    #[test]
    fn a_lean_slice_is_the_slice_without_its_managed_fields() {
        let mut full: EndpointSlice = serde_json::from_str(SLICE).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        full.metadata.managed_fields = None;
        let Lean(lean) = serde_json::from_str::<Lean<EndpointSlice>>(SLICE).unwrap();
        assert_eq!(lean, full);
    }

    #[test]
    fn a_slice_without_endpoints_reads_as_k8s_openapi_reads_it() {
        for endpoints in [r#""endpoints": null,"#, ""] {
            let text = format!(
                r#"{{"addressType": "IPv4", {endpoints} "metadata": {{"name": "e", "namespace": "ns"}}}}"#
            );
            let full: EndpointSlice = serde_json::from_str(&text).unwrap();
            let Lean(lean) = serde_json::from_str::<Lean<EndpointSlice>>(&text)
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(lean, full);
            assert!(lean.endpoints.is_empty());
        }
    }

    #[test]
    fn a_workloads_metadata_is_asked_for_alone_and_decoded_without_managed_fields() {
        let meta = r#"{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"name": "d", "namespace": "ns", "resourceVersion": "7",
                         "annotations": {"x": "1"},
                         "managedFields": [{"manager": "churn", "fieldsType": "FieldsV1",
                                            "fieldsV1": {"f:spec": {"f:replicas": {}}}}]}}"#;
        let m: MetaOnly<Deployment> = serde_json::from_str(meta).unwrap();
        assert_eq!(m.metadata.name.as_deref(), Some("d"));
        assert_eq!(m.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(m.metadata.annotations.unwrap()["x"], "1");
        assert!(m.metadata.managed_fields.is_none());
        assert!(MetaOnly::<Deployment>::metadata_api());
        assert!(!Lean::<EndpointSlice>::metadata_api());
        assert_eq!(MetaOnly::<Deployment>::plural(&()), "deployments");
        assert_eq!(
            Lean::<EndpointSlice>::api_version(&()),
            "discovery.k8s.io/v1"
        );
        assert_eq!(Lean::<EndpointSlice>::group(&()), "discovery.k8s.io");
    }
}
