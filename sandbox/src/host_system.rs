//! [`SandboxBuilder::host_system`]: the host's programs and libraries as
//! the guest's root, read-only, with a curated `/etc` that holds no
//! secrets.

use std::path::Path;

use crate::config::SandboxBuilder;

/// Host directories shown read-only at the same guest paths, when they
/// exist (on a merged-/usr system `/bin`, `/lib`, ... are links into
/// `/usr` and show the same directories).
const SYSTEM_DIRS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    // Public certificates (links into /usr/share/ca-certificates) and
    // Debian's alternatives (links into /usr); never /etc/ssl/private.
    "/etc/ssl/certs",
    "/etc/alternatives",
    "/etc/ld.so.conf.d",
];

/// Host files copied into the guest's `/etc` (read when the builder is
/// made): what the dynamic loader, name lookups and time zones need. No
/// file with secrets (shadow, gshadow, keys, credentials) is among them;
/// `/etc/passwd` and `/etc/group` stay the guest's own (no host accounts).
const ETC_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/protocols",
    "/etc/services",
    "/etc/mime.types",
    "/etc/debian_version",
    "/etc/os-release",
    // OpenSSL's configuration (`openssl req` needs it), getaddrinfo's
    // and readline's.
    "/etc/ssl/openssl.cnf",
    "/etc/gai.conf",
    "/etc/inputrc",
];

/// A copied /etc file larger than this is skipped (none of the above is
/// near it; a replaced file must not make every run carry megabytes).
const ETC_FILE_MAX: u64 = 4 << 20;

/// The guest's environment with the host system: its user (see the
/// guest's `/etc/passwd`), a writable home and the usual search path.
const SYSTEM_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("HOME", "/tmp"),
    ("USER", "sandbox"),
    ("LOGNAME", "sandbox"),
    ("LANG", "C.UTF-8"),
];

impl SandboxBuilder {
    /// The host system as the guest's root, in one call: the host's
    /// `/usr`, `/bin`, `/sbin` and `/lib*` read-only at the same paths, a
    /// curated `/etc` (the loader cache and configuration, `nsswitch.conf`,
    /// `hosts`, `localtime`, `os-release`, OpenSSL's `openssl.cnf`, the
    /// public certificates in `/etc/ssl/certs`, `/etc/alternatives`: no
    /// accounts, no keys, no `/etc/ssl/private`), and `PATH`, `HOME` (`/tmp`, writable), `USER`,
    /// `LOGNAME` and `LANG`. Dynamic programs, `/bin/sh` and shell-outs
    /// (`system`, `popen`, `subprocess(shell=True)`) then work.
    ///
    /// What it exposes: everything under those directories that the host
    /// lets any user read (the permission rule of [`mount`](Self::mount)),
    /// i.e. the installed software and its world-readable configuration.
    /// Directories that do not exist on the host are left out; settings
    /// given after this call (`env`, `mount`, `file`) add to or replace
    /// these.
    ///
    /// ```no_run
    /// use hvsandbox::{Command, Sandbox};
    /// let mut sb = Sandbox::builder().host_system().build()?;
    /// let out = sb.run(&Command::new("sh").args(["-c", "python3 -c 'print(6 * 7)' | tr 4 x"]))?;
    /// assert_eq!(out.stdout, b"x2\n");
    /// # Ok::<(), hvsandbox::Error>(())
    /// ```
    pub fn host_system(mut self) -> Self {
        for dir in SYSTEM_DIRS {
            if Path::new(dir).is_dir() {
                self = self.mount(dir, dir);
            }
        }
        for file in ETC_FILES {
            let small = std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.len() <= ETC_FILE_MAX);
            if let Some(data) = small.then(|| std::fs::read(file).ok()).flatten() {
                self = self.file(file, data);
            }
        }
        for (k, v) in SYSTEM_ENV {
            self = self.env(k, v);
        }
        self
    }
}
