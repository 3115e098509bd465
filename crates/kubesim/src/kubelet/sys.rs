//! The only code with `unsafe`: mount namespaces for the service-account files, signals to
//! containers, and the command that starts a container (its `pre_exec`).

use super::*;

/// Root and a working `unshare(CLONE_NEWNS)`: tried once with `/bin/true`.
pub(super) fn mount_namespaces_work(state_dir: &Path) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    let Some(run) = run_dir() else { return false };
    if state_dir.canonicalize().is_ok_and(|d| d.starts_with(&run)) {
        // The private /run would hide the pod's own files.
        return false;
    }
    let mut cmd = std::process::Command::new("true");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.status().is_ok_and(|s| s.success())
}

/// The directory `/var/run` resolves to (`/run` on current distributions).
pub(super) fn run_dir() -> Option<PathBuf> {
    Path::new("/var/run").canonicalize().ok()
}

/// Prepared strings for the mount-namespace set-up, made before `fork` because nothing may
/// allocate between `fork` and `exec`.
pub(super) struct NamespaceMounts {
    pub(super) run: CString,
    pub(super) secrets: CString,
    pub(super) kubernetes_io: CString,
    pub(super) target: CString,
    pub(super) source: CString,
    /// Pod files bound read-only over the host's (`/etc/resolv.conf`, `/etc/hosts`).
    pub(super) files: Vec<FileBind>,
    /// The container gets the service-account directory (see `PodRuntime`).
    pub(super) service_account: bool,
    /// Secret and ConfigMap volume directories, bound read-only over themselves: a process
    /// running as root (Redis' `CONFIG REWRITE` of a config file from a Secret) cannot change
    /// them, while the kubelet's updates (outside the namespace) still show.
    pub(super) read_only_dirs: Vec<CString>,
}

/// One file bound over another in the container's mount namespace.
pub(super) struct FileBind {
    source: CString,
    target: CString,
    /// The target lives in the private `/run` (a distribution whose `/etc/resolv.conf` links
    /// there): these directories and the file are made in it first.
    make_dirs: Vec<CString>,
    make_file: bool,
}

fn c_path(p: &Path) -> Option<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).ok()
}

pub(super) fn namespace_mounts(
    shared: &Shared,
    rt: &PodRuntime,
    service_account: bool,
) -> Option<NamespaceMounts> {
    let run = run_dir()?;
    let c = c_path;
    let mut files = Vec::new();
    if shared.pod_dns() {
        for (name, over) in [("resolv.conf", "/etc/resolv.conf"), ("hosts", "/etc/hosts")] {
            let source = rt.dir.join("etc").join(name);
            // Bound where the host's file really is (it may be a symbolic link).
            let Ok(target) = Path::new(over).canonicalize() else {
                continue;
            };
            if !source.exists() {
                continue;
            }
            let in_run = target.starts_with(&run);
            let make_dirs = if in_run {
                let mut dirs: Vec<PathBuf> = target
                    .ancestors()
                    .skip(1)
                    .take_while(|d| d.starts_with(&run) && *d != run.as_path())
                    .map(Path::to_path_buf)
                    .collect();
                dirs.reverse();
                dirs.iter().filter_map(|d| c(d)).collect()
            } else {
                Vec::new()
            };
            files.push(FileBind {
                source: c(&source)?,
                target: c(&target)?,
                make_dirs,
                make_file: in_run,
            });
        }
    }
    let read_only_dirs = rt
        .read_only_volumes
        .iter()
        .map(|v| rt.dir.join("volumes").join(v))
        .filter(|d| d.is_dir())
        .filter_map(|d| c(&d))
        .collect();
    Some(NamespaceMounts {
        service_account,
        read_only_dirs,
        secrets: c(&run.join("secrets"))?,
        kubernetes_io: c(&run.join("secrets/kubernetes.io"))?,
        target: c(&run.join("secrets/kubernetes.io/serviceaccount"))?,
        source: c(&rt.dir.join("serviceaccount"))?,
        run: c(&run)?,
        files,
    })
}

/// Binds `source` over `target`, read-only.
///
/// # Safety
/// Async-signal-safe (system calls only): callable between fork and exec.
unsafe fn bind_read_only(source: &CString, target: &CString) -> libc::c_int {
    // SAFETY: plain system calls on NUL-terminated strings.
    unsafe {
        let r = libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        );
        if r != 0 {
            return r;
        }
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        )
    }
}

/// In the child, before exec: a private mount namespace with a fresh `/run` holding the
/// service-account directory, read-only, and the pod's `resolv.conf` and `hosts` over the
/// host's.
pub(super) fn mount_service_account(m: &NamespaceMounts) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls on NUL-terminated strings prepared before fork.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            c"tmpfs".as_ptr(),
            m.run.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=755".as_ptr().cast(),
        ))?;
        if m.service_account {
            for d in [&m.secrets, &m.kubernetes_io, &m.target] {
                check(libc::mkdir(d.as_ptr(), 0o755))?;
            }
            check(bind_read_only(&m.source, &m.target))?;
        }
        for f in &m.files {
            for d in &f.make_dirs {
                if libc::mkdir(d.as_ptr(), 0o755) != 0 && *libc::__errno_location() != libc::EEXIST
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if f.make_file {
                let fd = libc::open(
                    f.target.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            check(bind_read_only(&f.source, &f.target))?;
        }
        for d in &m.read_only_dirs {
            check(bind_read_only(d, d))?;
        }
    }
    Ok(())
}

/// A command in the container's context: its environment, its own process group (so the
/// kubelet can end everything it started), killed if the kubelet dies, and the mount
/// namespace when in use.
pub(super) fn container_command(
    shared: &Shared,
    rt: &PodRuntime,
    container: &str,
    program: &str,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> std::io::Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(rt.dir.join("home"))
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    cmd.stdout(out.try_clone()?).stderr(out);
    let mounts = if shared.mount_namespaces {
        namespace_mounts(
            shared,
            rt,
            rt.service_account_containers.contains(container),
        )
    } else {
        None
    };
    // SAFETY: only async-signal-safe calls between fork and exec; strings prepared above.
    unsafe {
        cmd.pre_exec(move || {
            // A kubelet that dies takes its containers with it, as a node that goes down does.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(m) = &mounts {
                mount_service_account(m)?;
            }
            Ok(())
        });
    }
    Ok(cmd)
}

pub(super) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

pub(super) fn signal_group(pid: u32, sig: libc::c_int) {
    // SAFETY: as above; the container's process group has the container's PID as its ID.
    unsafe {
        libc::kill(-(pid as libc::pid_t), sig);
    }
}

pub(super) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_shells() {
        let status = |cmd: &str| {
            std::process::Command::new("sh")
                .args(["-c", cmd])
                .status()
                .unwrap()
        };
        assert_eq!(exit_code(status("exit 0")), 0);
        assert_eq!(exit_code(status("exit 3")), 3);
        assert_eq!(exit_code(status("kill -TERM $$")), 128 + libc::SIGTERM);
    }
}
