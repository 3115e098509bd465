//! The Kubernetes client every command of the binary uses: from a kubeconfig file, or from the
//! pod's service account in a cluster.

use std::path::{Path, PathBuf};

/// Why no client could be built. The messages name the file, because the usual cause is a
/// wrong `--kubeconfig` or a pod without a mounted service account.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file cannot be read or parsed.
    #[error("{}: {source}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig names no usable cluster, user or context.
    #[error("{}: {source}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor an in-cluster service account.
    #[error("no --kubeconfig and no in-cluster service account: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    /// The configuration is complete but the client cannot be built (TLS material).
    #[error("{0}")]
    Build(#[source] kube::Error),
}

/// A Kubernetes client from the kubeconfig at `kubeconfig`, or in-cluster without one, and
/// the namespace to use (`namespace`, else the configuration's default).
pub async fn connect(
    kubeconfig: Option<&Path>,
    namespace: Option<&str>,
) -> Result<(kube::Client, String), ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ClientError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|source| ClientError::Config {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => kube::Config::incluster().map_err(ClientError::InCluster)?,
    };
    let ns = namespace
        .map(str::to_string)
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(ClientError::Build)?;
    Ok((client, ns))
}
