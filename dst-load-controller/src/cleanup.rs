//! `cleanup`: delete exactly what churn created, and wait until it is gone.
//! Its flags are `cmd::cleanup`'s.

use std::{fmt, time::Duration};

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{Namespace, Pod, Service},
    },
};
use kube::{
    Api, Resource,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;

use crate::{
    crds::{Server, ServiceProfile},
    kube_api::{ApiMetrics, Caller, Error, KubeSettings, Op},
    labels,
};

/// Connects with `kube`, first stops `stop_deployment` (see
/// [`stop_deployment`]) if given, then [`cleanup`]s `namespace`; API calls
/// give up retrying when `shutdown` fires. Returns whether a Deployment was
/// stopped, and what was deleted.
pub async fn connect_and_cleanup(
    kube: &KubeSettings,
    namespace: &str,
    stop: Option<&str>,
    timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(bool, Report), CleanupError> {
    let (client, caller) = connect(kube, shutdown).await?;
    let stopped = match stop {
        Some(name) => {
            let deadline = tokio::time::Instant::now() + timeout;
            stop_deployment(&client, &caller, namespace, name, deadline).await?
        }
        None => false,
    };
    let report = cleanup(&client, &caller, namespace, timeout).await?;
    Ok((stopped, report))
}

/// Connects with `kube` and lists what [`connect_and_cleanup`] would delete
/// in `namespace` (see [`plan`]), changing nothing.
pub async fn connect_and_plan(
    kube: &KubeSettings,
    namespace: &str,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<Plan, CleanupError> {
    let (client, caller) = connect(kube, shutdown).await?;
    plan(&client, &caller, namespace).await
}

async fn connect(
    kube: &KubeSettings,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(kube::Client, Caller), CleanupError> {
    let client = kube.client().await?;
    let caller = Caller::new(
        kube.limiter(),
        ApiMetrics::register(&mut Registry::default()),
        shutdown,
    );
    Ok((client, caller))
}

/// What cleanup deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Services deleted.
    pub services: usize,
    /// Deployments deleted.
    pub deployments: usize,
    /// StatefulSets deleted.
    pub statefulsets: usize,
    /// Servers (`policy.linkerd.io`) deleted.
    pub servers: usize,
    /// ServiceProfiles (`linkerd.io`) deleted.
    pub service_profiles: usize,
    /// Whether the namespace was deleted (only when churn created it and nothing else is in it).
    pub namespace_deleted: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deleted {} services and {} deployments{}{}{}{}",
            self.services,
            self.deployments,
            match self.statefulsets {
                0 => String::new(),
                n => format!(" and {n} statefulsets"),
            },
            match self.servers {
                0 => String::new(),
                n => format!(" and {n} servers"),
            },
            match self.service_profiles {
                0 => String::new(),
                n => format!(" and {n} serviceprofiles"),
            },
            if self.namespace_deleted {
                " and the namespace"
            } else {
                ""
            }
        )
    }
}

/// Cleanup took longer than allowed.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what} in namespace {namespace} to be deleted; check `kubectl -n {namespace} get {what} -l {selector}`", selector = labels::owned_selector())]
pub struct Timeout {
    waited: Duration,
    what: &'static str,
    namespace: String,
}

/// Why a cleanup stopped.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// No client.
    #[error(transparent)]
    Connect(#[from] crate::kube_api::ConnectError),
    /// A call that retrying could not fix.
    #[error(transparent)]
    Api(#[from] Error),
    /// Objects still there at the deadline.
    #[error(transparent)]
    Timeout(#[from] Timeout),
    /// `--stop-deployment` names a Deployment whose pods cannot be told
    /// apart.
    #[error("deployment {deployment} has no matchLabels selector: cannot tell which pods are its")]
    NoSelector {
        /// Its name.
        deployment: String,
    },
}

/// Scales Deployment `name` to zero and waits until its pods are gone.
/// Returns false when there is no such Deployment.
pub async fn stop_deployment(
    client: &kube::Client,
    caller: &Caller,
    namespace: &str,
    name: &str,
    deadline: tokio::time::Instant,
) -> Result<bool, CleanupError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let op = |verb, resource| Op {
        verb,
        resource,
        namespace: namespace.to_string(),
        name: Some(name.to_string()),
    };
    let Some(deployment) = caller
        .call(op("get", "deployments"), || api.get_opt(name))
        .await?
    else {
        return Ok(false);
    };
    let scale = Patch::Merge(serde_json::json!({"spec": {"replicas": 0}}));
    let pp = PatchParams::default();
    match caller
        .call(op("patch", "deployments/scale"), || {
            api.patch_scale(name, &pp, &scale)
        })
        .await
    {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let selector = deployment
        .spec
        .and_then(|s| s.selector.match_labels)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if selector.is_empty() {
        return Err(CleanupError::NoSelector {
            deployment: name.to_string(),
        });
    }
    wait_gone("pods", namespace, deadline, || {
        count::<Pod>(client, caller, namespace, "pods", Some(&selector))
    })
    .await?;
    Ok(true)
}

/// Deletes every Service, Deployment, StatefulSet, Server and ServiceProfile labelled as churn's in `namespace`,
/// waits until they and their pods are gone, and deletes the namespace if
/// churn created it and nothing else is in it.
pub async fn cleanup(
    client: &kube::Client,
    caller: &Caller,
    namespace: &str,
    timeout: Duration,
) -> Result<Report, CleanupError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let services = delete_owned::<Service>(client, caller, namespace, "services").await?;
    let deployments = delete_owned::<Deployment>(client, caller, namespace, "deployments").await?;
    let statefulsets =
        delete_owned::<StatefulSet>(client, caller, namespace, "statefulsets").await?;
    let servers = without_crd(delete_owned::<Server>(client, caller, namespace, "servers").await)?;
    let service_profiles = without_crd(
        delete_owned::<ServiceProfile>(client, caller, namespace, "serviceprofiles").await,
    )?;
    let owned = labels::owned_selector();
    let selector = Some(owned.as_str());
    let kinds = [
        (Kind::Services, true),
        (Kind::Deployments, true),
        (Kind::StatefulSets, true),
        (Kind::Pods, true),
        (Kind::ServiceProfiles, service_profiles > 0),
        (Kind::Servers, servers > 0),
    ];
    for (kind, deleted) in kinds {
        if deleted {
            wait_gone(kind.resource(), namespace, deadline, || {
                kind.count(client, caller, namespace, selector)
            })
            .await?;
        }
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let op = |verb| Op {
        verb,
        resource: "namespaces",
        namespace: namespace.to_string(),
        name: Some(namespace.to_string()),
    };
    let ns = caller
        .call(op("get"), || namespaces.get_opt(namespace))
        .await?;
    let ours = ns
        .as_ref()
        .is_some_and(|n| labels::is_owned(n.metadata.labels.as_ref()));
    let mut namespace_deleted = false;
    if ours
        && count::<Service>(client, caller, namespace, "services", None).await? == 0
        && count::<Deployment>(client, caller, namespace, "deployments", None).await? == 0
        && count::<StatefulSet>(client, caller, namespace, "statefulsets", None).await? == 0
        && count::<Pod>(client, caller, namespace, "pods", None).await? == 0
        && unseen_or_none(count::<Server>(client, caller, namespace, "servers", None).await)?
        && unseen_or_none(
            count::<ServiceProfile>(client, caller, namespace, "serviceprofiles", None).await,
        )?
    {
        let dp = DeleteParams::default();
        match caller
            .call(op("delete"), || namespaces.delete(namespace, &dp))
            .await
        {
            Ok(_) => namespace_deleted = true,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Report {
        services,
        deployments,
        statefulsets,
        servers,
        service_profiles,
        namespace_deleted,
    })
}

/// What [`cleanup`] would delete: every object churn owns in the
/// namespace (`kind/name`), and whether the namespace would go too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `service/NAME`, `deployment/NAME`, ..., in deletion order.
    pub objects: Vec<String>,
    /// Whether churn created the namespace and nothing else is in it.
    pub namespace: bool,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "would delete {} objects{} (dry run: nothing deleted)",
            self.objects.len(),
            if self.namespace {
                " and the namespace"
            } else {
                ""
            }
        )?;
        for o in &self.objects {
            write!(f, "\n  {o}")?;
        }
        Ok(())
    }
}

/// Lists what [`cleanup`] would delete in `namespace`, deleting nothing.
pub async fn plan(
    client: &kube::Client,
    caller: &Caller,
    namespace: &str,
) -> Result<Plan, CleanupError> {
    let mut objects = Vec::new();
    let mut all_owned = true;
    for (names, only_owned) in [
        owned_of::<Service>(client, caller, namespace, "services", "service").await?,
        owned_of::<Deployment>(client, caller, namespace, "deployments", "deployment").await?,
        owned_of::<StatefulSet>(client, caller, namespace, "statefulsets", "statefulset").await?,
        owned_of::<Server>(client, caller, namespace, "servers", "server").await?,
        owned_of::<ServiceProfile>(
            client,
            caller,
            namespace,
            "serviceprofiles",
            "serviceprofile",
        )
        .await?,
    ] {
        objects.extend(names);
        all_owned &= only_owned;
    }
    // Pods go with their workloads: not listed, but they keep the namespace.
    all_owned &= owned_of::<Pod>(client, caller, namespace, "pods", "pod")
        .await?
        .1;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let op = Op {
        verb: "get",
        resource: "namespaces",
        namespace: namespace.to_string(),
        name: Some(namespace.to_string()),
    };
    let ours = caller
        .call(op, || namespaces.get_opt(namespace))
        .await?
        .is_some_and(|n| labels::is_owned(n.metadata.labels.as_ref()));
    Ok(Plan {
        objects,
        namespace: ours && all_owned,
    })
}

/// `kind/name` of every object of one kind churn owns in `namespace`,
/// sorted, and whether they are all the namespace holds of that kind (none
/// and true where the cluster lacks the kind's CRD). One list of the kind.
async fn owned_of<K>(
    client: &kube::Client,
    caller: &Caller,
    namespace: &str,
    resource: &'static str,
    kind: &str,
) -> Result<(Vec<String>, bool), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default();
    let op = Op {
        verb: "list",
        resource,
        namespace: namespace.to_string(),
        name: None,
    };
    let list = match caller.call(op, || api.list_metadata(&lp)).await {
        Err(e) if e.is_not_found() => return Ok((Vec::new(), true)),
        r => r?,
    };
    let all = list.items.len();
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter(|o| labels::is_owned(o.metadata.labels.as_ref()))
        .filter_map(|o| o.metadata.name.map(|n| format!("{kind}/{n}")))
        .collect();
    names.sort();
    let only_owned = names.len() == all;
    Ok((names, only_owned))
}

/// No Servers or ServiceProfiles where the cluster lacks Linkerd's CRDs,
/// or where these credentials may not list them (then churn, run with
/// them, made none).
fn without_crd(r: Result<usize, Error>) -> Result<usize, Error> {
    match r {
        Err(e) if e.is_not_found() => Ok(0),
        Err(Error::Forbidden { .. }) => {
            tracing::info!(
                "may not list or delete Linkerd's Servers or ServiceProfiles: none deleted"
            );
            Ok(0)
        }
        r => Ok(r?),
    }
}

/// Whether a count says the namespace holds none: true without the CRDs,
/// false when these credentials may not look (what is there is unknown).
fn unseen_or_none(r: Result<usize, Error>) -> Result<bool, Error> {
    match r {
        Ok(n) => Ok(n == 0),
        Err(e) if e.is_not_found() => Ok(true),
        Err(Error::Forbidden { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn delete_owned<K>(
    client: &kube::Client,
    caller: &Caller,
    namespace: &str,
    resource: &'static str,
) -> Result<usize, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&labels::owned_selector());
    let op = |verb, name: Option<String>| Op {
        verb,
        resource,
        namespace: namespace.to_string(),
        name,
    };
    let list = caller
        .call(op("list", None), || api.list_metadata(&lp))
        .await?;
    let mut deleted = 0;
    for obj in list.items {
        let Some(name) = obj.metadata.name else {
            continue;
        };
        // Background propagation: the garbage collector removes ReplicaSets and pods.
        let dp = DeleteParams::background();
        match caller
            .call(op("delete", Some(name.clone())), || api.delete(&name, &dp))
            .await
        {
            Ok(_) => deleted += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

async fn count<K>(
    client: &kube::Client,
    caller: &Caller,
    namespace: &str,
    resource: &'static str,
    selector: Option<&str>,
) -> Result<usize, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    let op = Op {
        verb: "list",
        resource,
        namespace: namespace.to_string(),
        name: None,
    };
    Ok(caller
        .call(op, || api.list_metadata(&lp))
        .await?
        .items
        .len())
}

/// What cleanup deletes and then waits for.
#[derive(Copy, Clone, Debug)]
enum Kind {
    Services,
    Deployments,
    StatefulSets,
    Pods,
    ServiceProfiles,
    Servers,
}

impl Kind {
    /// Its resource name (in errors and metrics).
    fn resource(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::Deployments => "deployments",
            Kind::StatefulSets => "statefulsets",
            Kind::Pods => "pods",
            Kind::ServiceProfiles => "serviceprofiles",
            Kind::Servers => "servers",
        }
    }

    /// How many match `selector` in `namespace`.
    async fn count(
        self,
        client: &kube::Client,
        caller: &Caller,
        namespace: &str,
        selector: Option<&str>,
    ) -> Result<usize, Error> {
        let r = self.resource();
        match self {
            Kind::Services => count::<Service>(client, caller, namespace, r, selector).await,
            Kind::Deployments => count::<Deployment>(client, caller, namespace, r, selector).await,
            Kind::StatefulSets => {
                count::<StatefulSet>(client, caller, namespace, r, selector).await
            }
            Kind::Pods => count::<Pod>(client, caller, namespace, r, selector).await,
            Kind::ServiceProfiles => {
                count::<ServiceProfile>(client, caller, namespace, r, selector).await
            }
            Kind::Servers => count::<Server>(client, caller, namespace, r, selector).await,
        }
    }
}

/// Waits until `count` finds none of `resource` left, or the deadline.
async fn wait_gone<F, Fut>(
    resource: &'static str,
    namespace: &str,
    deadline: tokio::time::Instant,
    count: F,
) -> Result<(), CleanupError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<usize, Error>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if count().await? == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Timeout {
                waited: started.elapsed(),
                what: resource,
                namespace: namespace.to_string(),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
