//! A pod's files: volumes (emptyDir, secret, configMap) and the service-account token, renewed.

#![forbid(unsafe_code)]

use super::*;

/// `<pod>/volumes/<name>` for each volume mount (with its `subPath`).
pub(super) fn mount_map(pod_dir: &Path, c: &Container) -> MountMap {
    MountMap(
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                let mut dir = pod_dir.join("volumes").join(&m.name);
                if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    dir = dir.join(sub);
                }
                (m.mount_path.clone(), dir)
            })
            .collect(),
    )
}

pub(super) fn decode_b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

/// A claim's volume: its directory under the claims directory (made on first use, kept
/// across pods), linked at the pod's volume path.
fn mount_claim(
    shared: &Shared,
    rt: &PodRuntime,
    volume: &str,
    claim: &str,
    at: &Path,
) -> Result<(), String> {
    let bound = shared
        .store
        .read()
        .expect("store lock")
        .get("persistentvolumeclaims", &rt.namespace, claim)
        .is_some_and(|c| c.pointer("/status/phase").and_then(Value::as_str) == Some("Bound"));
    if !bound {
        return Err(format!(
            "MountVolume.SetUp failed for volume \"{volume}\" : persistentvolumeclaim \"{claim}\" not found or not bound"
        ));
    }
    let io = |e: std::io::Error| format!("volume {volume:?} (claim {claim}): {e}");
    let dir = shared.config.claims_dir.join(&rt.namespace).join(claim);
    std::fs::create_dir_all(&dir).map_err(io)?;
    // The kubelet makes a fresh volume writable for any container user, as for emptyDir.
    if std::fs::read_dir(&dir).map_err(io)?.next().is_none() {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
    }
    shared
        .claims_seen
        .lock()
        .expect("claims lock")
        .insert((rt.namespace.clone(), claim.to_string()));
    match std::fs::symlink_metadata(at) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(at).map_err(io)?,
        Ok(_) => std::fs::remove_file(at).map_err(io)?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&dir, at).map_err(io)
}

/// Writes the pod's volumes and service-account files. Errors are the kubelet's messages.
pub(super) fn prepare_pod_files(
    shared: &Shared,
    rt: &PodRuntime,
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("pod directory: {e}");
    let vol_dir = rt.dir.join("volumes");
    for sub in ["volumes", "logs", "home"] {
        std::fs::create_dir_all(rt.dir.join(sub)).map_err(io)?;
    }
    for d in [rt.dir.clone(), vol_dir.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    write_dns_files(shared, rt, spec).map_err(|e| format!("resolv.conf and hosts: {e}"))?;
    for v in spec.volumes.iter().flatten() {
        let dir = vol_dir.join(&v.name);
        if let Some(pvc) = &v.persistent_volume_claim {
            mount_claim(shared, rt, &v.name, &pvc.claim_name, &dir)?;
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(io)?;
        if is_service_account_projection(v) {
            // Its files are the pod's service-account files, bound at the standard path in
            // the containers that mount it (`PodRuntime::service_account_containers`).
            continue;
        }
        if v.empty_dir.is_some() {
            // The kubelet makes emptyDir world-writable so any container user can use it.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
            continue;
        }
        let (kind, name, items, mode, optional) = if let Some(s) = &v.secret {
            (
                "secret",
                s.secret_name.clone().unwrap_or_default(),
                s.items.clone(),
                s.default_mode,
                s.optional,
            )
        } else if let Some(c) = &v.config_map {
            (
                "configmap",
                c.name.clone(),
                c.items.clone(),
                c.default_mode,
                c.optional,
            )
        } else {
            return Err(format!(
                "volume {:?}: only emptyDir, persistentVolumeClaim, secret, configMap and the service-account projection are supported by kubesim",
                v.name
            ));
        };
        let storage = if kind == "secret" {
            "secrets"
        } else {
            "configmaps"
        };
        let obj = shared
            .store
            .read()
            .expect("store lock")
            .get(storage, &rt.namespace, &name);
        let Some(obj) = obj else {
            if optional == Some(true) {
                continue;
            }
            return Err(format!(
                "MountVolume.SetUp failed for volume \"{}\" : {} \"{name}\" not found",
                v.name,
                if kind == "secret" {
                    "secret"
                } else {
                    "configmap"
                }
            ));
        };
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for (k, val) in obj
            .get("data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let bytes = if kind == "secret" {
                decode_b64(val.as_str().unwrap_or_default())
            } else {
                val.as_str().unwrap_or_default().as_bytes().to_vec()
            };
            files.push((k.clone(), bytes));
        }
        for (k, val) in obj
            .get("binaryData")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            files.push((k.clone(), decode_b64(val.as_str().unwrap_or_default())));
        }
        let mode = mode.unwrap_or(0o644) as u32;
        let chosen: Vec<(String, Vec<u8>, u32)> = match &items {
            Some(items) if !items.is_empty() => {
                let mut out = Vec::new();
                for it in items {
                    match files.iter().find(|(k, _)| *k == it.key) {
                        Some((_, b)) => out.push((
                            it.path.clone(),
                            b.clone(),
                            it.mode.map_or(mode, |m| m as u32),
                        )),
                        None if optional == Some(true) => {}
                        None => {
                            return Err(format!(
                                "MountVolume.SetUp failed for volume \"{}\" : configmap references non-existent config key: {}",
                                v.name, it.key
                            ));
                        }
                    }
                }
                out
            }
            _ => files.into_iter().map(|(k, b)| (k, b, mode)).collect(),
        };
        for (path, bytes, mode) in chosen {
            let target = dir.join(&path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            write_atomically(&target, &bytes, mode).map_err(io)?;
        }
    }
    if !rt.service_account_containers.is_empty() {
        write_service_account(shared, rt, spec)?;
    }
    Ok(())
}

/// Whether `v` is the service-account projection: a `projected` volume whose sources are a
/// `serviceAccountToken` and at most the `kube-root-ca.crt` ConfigMap and the namespace (what
/// the API server's automount injects, and what manifests that mount the token into one
/// container only write by hand).
fn is_service_account_projection(v: &k8s_openapi::api::core::v1::Volume) -> bool {
    let Some(p) = &v.projected else {
        return false;
    };
    let sources = p.sources.as_deref().unwrap_or_default();
    sources.iter().any(|s| s.service_account_token.is_some())
        && sources.iter().all(|s| {
            s.service_account_token.is_some()
                || s.config_map
                    .as_ref()
                    .is_some_and(|c| c.name == "kube-root-ca.crt")
                || s.downward_api.is_some()
        })
}

/// The containers that get the service-account files (`PodRuntime`).
pub(super) fn service_account_containers(
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> std::collections::BTreeSet<String> {
    let all = spec.automount_service_account_token != Some(false);
    let projections: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| is_service_account_projection(v))
        .map(|v| v.name.as_str())
        .collect();
    spec.containers
        .iter()
        .filter(|c| {
            all || c.volume_mounts.iter().flatten().any(|m| {
                projections.contains(&m.name.as_str())
                    && [
                        SERVICE_ACCOUNT_DIR,
                        "/run/secrets/kubernetes.io/serviceaccount",
                    ]
                    .contains(&m.mount_path.trim_end_matches('/'))
            })
        })
        .map(|c| c.name.clone())
        .collect()
}

pub(super) fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("kubesim-tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// `token`, `ca.crt`, `namespace` (and a kubeconfig of them, for the non-root fallback).
pub(super) fn write_service_account(
    shared: &Shared,
    rt: &PodRuntime,
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> Result<(), String> {
    let account = spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".into());
    let token = with_store(shared, |s| {
        crate::server::issue_token(s, &rt.namespace, &account, TOKEN_TTL.as_secs() as i64)
    })
    .map_err(|_| {
        format!(
            "error looking up service account {}/{account}: serviceaccount \"{account}\" not found",
            rt.namespace
        )
    })?;
    let dir = rt.dir.join("serviceaccount");
    let io = |e: std::io::Error| format!("service account files: {e}");
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    write_atomically(&dir.join("token"), token.as_bytes(), 0o644).map_err(io)?;
    write_atomically(&dir.join("ca.crt"), shared.config.ca_pem.as_bytes(), 0o644).map_err(io)?;
    write_atomically(&dir.join("namespace"), rt.namespace.as_bytes(), 0o644).map_err(io)?;
    let api = shared.config.api_server;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: in-cluster\n  cluster:\n    server: \"https://{api}\"\n    certificate-authority: \"{}\"\nusers:\n- name: sa\n  user:\n    tokenFile: \"{}\"\ncontexts:\n- name: in-cluster\n  context:\n    cluster: in-cluster\n    user: sa\n    namespace: \"{}\"\ncurrent-context: in-cluster\n",
        dir.join("ca.crt").display(),
        dir.join("token").display(),
        rt.namespace
    );
    write_atomically(&dir.join("kubeconfig"), kubeconfig.as_bytes(), 0o644).map_err(io)
}

pub(super) async fn renew_token_loop(
    shared: Arc<Shared>,
    rt: Arc<PodRuntime>,
    spec: k8s_openapi::api::core::v1::PodSpec,
) {
    if rt.service_account_containers.is_empty() {
        return;
    }
    loop {
        tokio::time::sleep(TOKEN_TTL * 4 / 5).await;
        if let Err(e) = write_service_account(&shared, &rt, &spec) {
            tracing::warn!(pod = %rt.name, error = %e, "kubelet: token renewal failed");
        }
    }
}

/// The pod's `etc/resolv.conf` and `etc/hosts` (bound over the container's own when it
/// starts), as the kubelet writes them: cluster DNS for `dnsPolicy: ClusterFirst` (the
/// default), the node's resolver for `Default`, `dnsConfig` alone for `None`; the hosts file
/// names the pod (`<hostname>.<subdomain>.<ns>.svc.<domain>` with a subdomain).
fn write_dns_files(
    shared: &Shared,
    rt: &PodRuntime,
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> std::io::Result<()> {
    let Some(dns) = shared
        .config
        .cluster_dns
        .as_ref()
        .filter(|_| shared.pod_dns())
    else {
        return Ok(());
    };
    let etc = rt.dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755))?;
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let resolv = if policy == "Default" {
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    } else {
        let mut conf = if policy == "None" {
            crate::dns::ResolvConf::default()
        } else {
            crate::dns::ResolvConf::cluster_first(dns.nameserver, &rt.namespace, &dns.domain)
        };
        if let Some(cfg) = &spec.dns_config {
            conf.nameservers
                .extend(cfg.nameservers.iter().flatten().cloned());
            conf.searches.extend(cfg.searches.iter().flatten().cloned());
            for o in cfg.options.iter().flatten() {
                let name = o.name.as_deref().unwrap_or_default();
                conf.options.retain(|x| x.split(':').next() != Some(name));
                conf.options.push(match &o.value {
                    Some(v) => format!("{name}:{v}"),
                    None => name.to_string(),
                });
            }
        }
        conf.render()
    };
    let hostname = spec.hostname.as_deref().unwrap_or(&rt.name);
    let hosts = crate::dns::hosts_file(
        rt.ip,
        hostname,
        spec.subdomain.as_deref(),
        &rt.namespace,
        &dns.domain,
    );
    for (name, text) in [("resolv.conf", resolv), ("hosts", hosts)] {
        let path = etc.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::VolumeMount;

    #[test]
    fn each_mount_maps_to_its_volume_directory_and_sub_path() {
        let c = Container {
            name: "redis".into(),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "data".into(),
                    mount_path: "/data".into(),
                    ..Default::default()
                },
                VolumeMount {
                    name: "auth".into(),
                    mount_path: "/etc/redis/password".into(),
                    sub_path: Some("password".into()),
                    ..Default::default()
                },
                VolumeMount {
                    name: "conf".into(),
                    mount_path: "/conf".into(),
                    sub_path: Some(String::new()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let m = mount_map(Path::new("/pods/p"), &c);
        assert_eq!(
            m.0,
            vec![
                ("/data".to_string(), PathBuf::from("/pods/p/volumes/data")),
                (
                    "/etc/redis/password".to_string(),
                    PathBuf::from("/pods/p/volumes/auth/password")
                ),
                ("/conf".to_string(), PathBuf::from("/pods/p/volumes/conf")),
            ]
        );
    }

    #[test]
    fn secret_values_decode_and_bad_base64_is_empty() {
        assert_eq!(decode_b64("cHc="), b"pw".to_vec());
        assert!(decode_b64("not base64!").is_empty());
    }

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        write_atomically(&f, b"one", 0o600).unwrap();
        write_atomically(&f, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert!(
            !f.with_extension("kubesim-tmp").exists(),
            "no temporary left"
        );
    }
}
