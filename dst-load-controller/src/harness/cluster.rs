//! A plan against a cluster: churn creates the scenario's services through
//! the Kubernetes API and changes them, the client watches a real
//! destination controller, the Kubernetes API is the ground truth. Across
//! two linked clusters ([`Multicluster`]) churn and the truth are in the
//! target and the streams watch the source's mirrors.

use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::{
    error::Error,
    load::{Chosen, Followed, Load, Watched},
};
use crate::{
    churn::{self, objects::ChangeKind, objects::Export},
    client::{self, Fleet},
    kube_api::KubeSettings,
    runtime::Runtime,
};

/// The cluster a plan runs in (in multicluster, the source).
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Its Destination service (host:port).
    pub destination: String,
    /// The namespace of churn's services (in multicluster, of the mirrors
    /// too).
    pub namespace: String,
    /// Its cluster domain: the client watches `{svc}.{ns}.svc.{domain}`.
    pub cluster_domain: String,
    /// Leave the services in place at the end.
    pub keep: bool,
    /// Its Kubernetes client.
    pub kube: KubeSettings,
}

/// A cluster run as it goes: churn's stop, its end, its metrics.
pub(super) struct ClusterLoad<'a> {
    cluster: &'a Cluster,
    multicluster: Option<&'a Multicluster>,
    churn_stop: CancellationToken,
    _churn_stop: Option<tokio_util::sync::DropGuard>,
    churn_ended: Option<tokio::sync::oneshot::Receiver<()>>,
    churn_metrics: Option<churn::metrics::Metrics>,
}

impl<'a> ClusterLoad<'a> {
    pub(super) fn new(cluster: &'a Cluster, multicluster: Option<&'a Multicluster>) -> Self {
        Self {
            cluster,
            multicluster,
            churn_stop: CancellationToken::new(),
            _churn_stop: None,
            churn_ended: None,
            churn_metrics: None,
        }
    }
}

impl Load for ClusterLoad<'_> {
    async fn prepare(
        &mut self,
        rt: &mut Runtime,
        registry: &mut Registry,
        run: &Chosen<'_>,
    ) -> Result<Watched, Error> {
        let (spec, shutdown) = (run.spec, rt.shutdown());
        let ns = &self.cluster.namespace;
        let mut churn_config = churn::Config::new(ns);
        churn_config.seed = run.seed;
        churn_config.kube = self
            .multicluster
            .map_or_else(|| self.cluster.kube.clone(), |mc| mc.kube.clone());
        churn_config.apply(spec);
        if let Some(p) = &mut churn_config.profiles {
            p.cluster_domain = self.cluster.cluster_domain.clone();
        }
        self.churn_stop = shutdown.child_token();
        self._churn_stop = Some(self.churn_stop.clone().drop_guard());
        if let Some(mc) = self.multicluster {
            churn_config.template.export = mc.export;
            // The mirrors appear in the same namespace of the source.
            churn::connect_and_ensure_namespace(&self.cluster.kube, ns, &self.churn_stop).await?;
        }
        let churn_metrics = churn::metrics::Metrics::register(registry);
        let churn = churn::Churn::new(churn_config, churn_metrics.clone()).await?;
        self.churn_metrics = Some(churn_metrics);
        let churn_ready = crate::admin::Readiness::default();
        // Churn's end, awaited before the settle (its last changes are in).
        let (churn_done, mut churn_ended) = tokio::sync::oneshot::channel::<()>();
        let (stop, ready) = (self.churn_stop.clone(), churn_ready.clone());
        rt.spawn_critical("churn", async move {
            let ran = churn.run(stop, ready).await;
            let _ = churn_done.send(());
            ran
        });
        while !churn_ready.get() {
            if shutdown.is_cancelled() || churn_ended.try_recv().is_ok() {
                return Err(Error::Stopped("churn's services existed"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.churn_ended = Some(churn_ended);

        let authorities = spec.authorities_in(ns, &self.cluster.cluster_domain);
        let authorities: Vec<String> = match self.multicluster {
            Some(mc) => {
                let mirrored: Vec<String> =
                    authorities.iter().map(|a| mc.mirrored(a, ns)).collect();
                // A stream opened before its mirror exists is refused
                // (NotFound): open them once the service mirror has made
                // every one.
                let services = spec
                    .services
                    .groups()
                    .flat_map(|g| (0..g.count).map(move |i| g.pattern.service_name(i)));
                let mirrors = services.map(|s| mc.mirrored_service(&s)).collect();
                wait_for_mirrors(&self.cluster.kube, ns, mirrors, &self.churn_stop).await?;
                mirrored
            }
            None => authorities,
        };
        let targets = authorities
            .iter()
            .map(|a| a.parse::<crate::target::Authority>())
            .collect::<Result<_, _>>()?;
        let mut config =
            client::Config::new(&self.cluster.destination, client::Watch::Targets(targets))?;
        config.ground_truth = true;
        config.cluster_domain = self.cluster.cluster_domain.clone();
        config.namespace = Some(ns.clone());
        // The ground truth through the same Kubernetes client settings as
        // churn (the target's, across clusters).
        config.kube = self.cluster.kube.clone();
        if let Some(mc) = self.multicluster {
            config.truth_cluster = mc
                .kube
                .kubeconfig
                .clone()
                .map(|kubeconfig| (kubeconfig, mc.kube.kube_context.clone()));
            config.truth_link = Some(mc.link.clone());
        }
        Ok(Watched {
            config,
            truth: None,
            profile_truth: None,
        })
    }

    /// Churn runs since `prepare` made its services.
    async fn begin(&mut self, _: &Runtime, _: &Fleet, _: &Chosen<'_>) -> Result<(), Error> {
        Ok(())
    }

    async fn end(&mut self) {
        self.churn_stop.cancel();
        if let Some(ended) = self.churn_ended.take() {
            let _ = ended.await;
        }
    }

    /// The profiles' truth holds churn's last ServiceProfile change (churn
    /// has ended: the ServiceProfiles are final): every profile stream
    /// expects what they say. Across clusters the profiles are not
    /// followed.
    async fn caught_up(&self, client: &Followed, until: tokio::time::Instant) {
        let streams = client.profiles.all();
        if streams.is_empty() || self.multicluster.is_some() {
            return;
        }
        let listed = async {
            let kube = self
                .cluster
                .kube
                .client()
                .await
                .map_err(|e| e.to_string())?;
            let api: kube::Api<crate::crds::ServiceProfile> =
                kube::Api::namespaced(kube, &self.cluster.namespace);
            let list = api.list(&kube::api::ListParams::default()).await;
            list.map(|l| l.items).map_err(|e| e.to_string())
        };
        let profiles = match tokio::time::timeout_at(until, listed).await {
            Ok(Ok(items)) => items,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot list the ServiceProfiles: not waiting for the profiles' truth");
                return;
            }
            Err(_) => return,
        };
        let made: std::collections::BTreeMap<String, client::profile_truth::Routes> = profiles
            .iter()
            .map(|sp| {
                (
                    sp.metadata.name.clone().unwrap_or_default(),
                    client::profile_truth::Routes::of(sp),
                )
            })
            .collect();
        let none = client::profile_truth::Routes::none();
        let behind = || {
            streams.iter().any(|s| {
                let r = made
                    .get(client::profile_truth::host_of(&s.target))
                    .unwrap_or(&none);
                !s.expects(&r.names, r.retry_ratio)
            })
        };
        while tokio::time::Instant::now() < until && behind() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn destination(&self) -> String {
        self.cluster.destination.clone()
    }

    fn updates_sent(&self) -> Option<u64> {
        None
    }

    fn changes(&self) -> u64 {
        self.churn_metrics.as_ref().map_or(0, |m| {
            m.scale_events_total.get()
                + m.changes(ChangeKind::Restart)
                + m.changes(ChangeKind::Create)
                + m.changes(ChangeKind::Delete)
        })
    }

    fn profile_changes(&self) -> u64 {
        self.churn_metrics
            .as_ref()
            .map_or(0, |m| m.profile_changes.get())
    }
}

/// After a cluster run (unless `keep`): deletes what churn created, in the
/// target first (its deletions remove the mirrors), then the source's
/// namespace of the mirrors. Both clusters are cleaned; a cleanup failure
/// after a measured run is the error returned, after a failed one it is
/// logged beside the run's error.
pub(super) async fn clean_up<T>(
    cluster: &Cluster,
    multicluster: Option<&Multicluster>,
    measured: Result<T, Error>,
) -> Result<T, Error> {
    if cluster.keep {
        return measured;
    }
    let clusters = match multicluster {
        Some(mc) => vec![&mc.kube, &cluster.kube],
        None => vec![&cluster.kube],
    };
    let mut failed = None;
    for kube in clusters {
        let cleaned = crate::cleanup::connect_and_cleanup(
            kube,
            &cluster.namespace,
            None,
            Duration::from_secs(120),
            CancellationToken::new(),
        )
        .await;
        match (&measured, cleaned) {
            (_, Ok((_, report))) => tracing::info!(%report, "cleaned up"),
            (Ok(_), Err(e)) => {
                failed.get_or_insert(e);
            }
            (Err(_), Err(e)) => {
                tracing::error!(error = %e, namespace = %cluster.namespace, "cleanup after a failed run failed too")
            }
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => measured,
    }
}

/// A scenario across two linked clusters: churn and the ground truth in the
/// target, the streams on the source's mirrors.
#[derive(Clone, Debug)]
pub struct Multicluster {
    /// The target's Kubernetes client settings.
    pub kube: KubeSettings,
    /// The link's name: mirrors are `{svc}-{link}`.
    pub link: String,
    /// How churn's services are exported.
    pub export: Export,
}

impl Multicluster {
    /// The name of a target service's mirror in the source.
    pub fn mirrored_service(&self, service: &str) -> String {
        match self.export {
            Export::Federated => format!("{service}-federated"),
            _ => format!("{service}-{}", self.link),
        }
    }

    /// The name the source serves a target authority of `namespace` under:
    /// the service's mirror, and a StatefulSet pod's hostname under it
    /// (remote discovery resolves `{pod}.{svc}-{link}` to that pod).
    pub fn mirrored(&self, authority: &str, namespace: &str) -> String {
        let marker = format!(".{namespace}.svc.");
        match authority.split_once(&marker) {
            Some((name, rest)) => match name.split_once('.') {
                Some((pod, service)) => {
                    format!("{pod}.{}{marker}{rest}", self.mirrored_service(service))
                }
                None => format!("{}{marker}{rest}", self.mirrored_service(name)),
            },
            None => authority.to_string(),
        }
    }
}

/// How long the service mirror may take to mirror a new service into the
/// source (seconds when it is up; a loaded machine gets a wide bound).
const MIRROR_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits until every one of `mirrors` exists in the source's `ns`.
async fn wait_for_mirrors(
    kube: &KubeSettings,
    ns: &str,
    mirrors: std::collections::BTreeSet<String>,
    stop: &CancellationToken,
) -> Result<(), Error> {
    use k8s_openapi::api::core::v1::Service;
    let services: kube::Api<Service> = kube::Api::namespaced(kube.client().await?, ns);
    let lp = kube::api::ListParams::default().labels("mirror.linkerd.io/mirrored-service=true");
    let deadline = tokio::time::Instant::now() + MIRROR_TIMEOUT;
    loop {
        // A failed list (an apiserver restarting) is tried again.
        let missing: Vec<&String> = match services.list_metadata(&lp).await {
            Ok(list) => {
                let seen: std::collections::BTreeSet<String> = list
                    .items
                    .into_iter()
                    .filter_map(|s| s.metadata.name)
                    .collect();
                mirrors.iter().filter(|m| !seen.contains(*m)).collect()
            }
            Err(e) => {
                tracing::debug!(error = %e, "listing the mirrors");
                mirrors.iter().collect()
            }
        };
        if missing.is_empty() {
            tracing::info!(
                mirrors = mirrors.len(),
                "every service is mirrored in the source"
            );
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Unmirrored {
                missing: missing.len(),
                mirrors: mirrors.len(),
                namespace: ns.to_string(),
                waited: MIRROR_TIMEOUT,
                first: missing[0].clone(),
            });
        }
        tokio::select! {
            _ = stop.cancelled() => return Err(Error::Stopped("every service was mirrored")),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
