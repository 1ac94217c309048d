//! Between JavaScript values and the Rust API: options into a
//! `SandboxBuilder` or a `Command`, outputs and errors into plain objects.
//! The JavaScript facade (index.js) has already checked every option's
//! type; values the Rust API refuses come back as its `InvalidConfig`.

use std::time::Duration;

use hvsandbox::{Command, Error, HugePages, Output, SandboxBuilder, SeccompMode, Snapshot};
use napi::bindgen_prelude::{Buffer, FromNapiValue, ToNapiValue, TypeName, ValidateNapiValue};
use std::ffi::c_void;

use napi::{sys, Env, JsArrayBuffer, JsBuffer, JsUnknown, NapiRaw, NapiValue, TypedArrayType, ValueType};
use napi_derive::napi;

#[napi(object)]
pub struct RawEnv {
    pub key: String,
    pub value: String,
}

#[napi(object)]
pub struct RawFile {
    pub path: String,
    pub data: Buffer,
    pub mode: Option<u32>,
}

#[napi(object)]
pub struct RawMount {
    pub host: String,
    pub guest: String,
    pub kernel_fs: Option<bool>,
}

/// A sandbox's settings (`SandboxBuilder`); sizes in bytes, times in ms.
#[napi(object)]
pub struct RawConfig {
    pub memory: Option<f64>,
    pub timeout_ms: Option<f64>,
    pub cpu_time_ms: Option<f64>,
    pub max_output: Option<f64>,
    pub fail_on_output_limit: Option<bool>,
    pub env: Option<Vec<RawEnv>>,
    pub mounts: Option<Vec<RawMount>>,
    pub files: Option<Vec<RawFile>>,
    pub cwd: Option<String>,
    pub seccomp: Option<String>,
    pub huge_pages: Option<String>,
    pub max_processes: Option<u32>,
    pub max_open_files: Option<u32>,
    pub max_input: Option<f64>,
    pub max_collect_bytes: Option<f64>,
    pub max_collect_files: Option<f64>,
}

/// One run (`Command`): no `program` resumes a snapshot.
#[napi(object)]
pub struct RawCommand {
    pub program: Option<String>,
    pub image: Option<Buffer>,
    pub args: Vec<String>,
    pub env: Option<Vec<RawEnv>>,
    pub env_clear: Option<bool>,
    pub stdin: Option<Buffer>,
    pub files: Option<Vec<RawFile>>,
    pub cwd: Option<String>,
    pub collect: Option<Vec<String>>,
    pub unlimited_streaming: Option<bool>,
}

fn ms(v: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(v / 1000.0).map_err(|_| Error::InvalidConfig(format!("not a duration: {v} ms")))
}

/// A byte count from JavaScript (a whole non-negative number).
fn count(what: &str, v: f64) -> Result<u64, Error> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 {
        Ok(v as u64)
    } else {
        Err(Error::InvalidConfig(format!("{what} must be a whole number of bytes >= 0, got {v}")))
    }
}

pub fn builder(cfg: RawConfig) -> Result<SandboxBuilder, Error> {
    let mut b = SandboxBuilder::default();
    if let Some(v) = cfg.memory {
        b = b.memory_bytes(count("memory", v)?);
    }
    if let Some(v) = cfg.timeout_ms {
        b = b.timeout(ms(v)?);
    }
    if let Some(v) = cfg.cpu_time_ms {
        b = b.cpu_time(ms(v)?);
    }
    if let Some(v) = cfg.max_output {
        b = b.max_output(usize::try_from(count("maxOutput", v)?).unwrap_or(usize::MAX));
    }
    if let Some(v) = cfg.fail_on_output_limit {
        b = b.fail_on_output_limit(v);
    }
    for e in cfg.env.unwrap_or_default() {
        b = b.env(e.key, e.value);
    }
    for m in cfg.mounts.unwrap_or_default() {
        b = if m.kernel_fs.unwrap_or(false) {
            b.mount_with_kernel_fs(m.host, m.guest)
        } else {
            b.mount(m.host, m.guest)
        };
    }
    for f in cfg.files.unwrap_or_default() {
        b = b.file_with_mode(f.path, &*f.data, f.mode.unwrap_or(hvsandbox::DEFAULT_FILE_MODE));
    }
    if let Some(v) = cfg.cwd {
        b = b.cwd(v);
    }
    if let Some(v) = cfg.seccomp {
        b = b.seccomp(match v.as_str() {
            "enforce" => SeccompMode::Enforce,
            "log" => SeccompMode::Log,
            "off" => SeccompMode::Disabled,
            other => return Err(Error::InvalidConfig(format!("seccomp must be enforce, log or off, got {other:?}"))),
        });
    }
    if let Some(v) = cfg.huge_pages {
        b = b.huge_pages(
            HugePages::parse(&v)
                .ok_or_else(|| Error::InvalidConfig(format!("hugePages must be off, prefer or require, got {v:?}")))?,
        );
    }
    if let Some(v) = cfg.max_processes {
        b = b.max_processes(v);
    }
    if let Some(v) = cfg.max_open_files {
        b = b.max_open_files(v);
    }
    if let Some(v) = cfg.max_input {
        b = b.max_input(count("maxInput", v)?);
    }
    if let Some(v) = cfg.max_collect_bytes {
        b = b.max_collect_bytes(count("maxCollectBytes", v)?);
    }
    if let Some(v) = cfg.max_collect_files {
        b = b.max_collect_files(usize::try_from(count("maxCollectFiles", v)?).unwrap_or(usize::MAX));
    }
    Ok(b)
}

/// A command from JavaScript, in one of two forms: the compact
/// `[program | null, ...args]` (null: resume a snapshot) that lib/options.js
/// sends when no option but the arguments is given — read by index, it
/// skips the ten named-property lookups of an object (each interns a name
/// anew, together ~10 µs on the call's critical path) — or a `RawCommand`.
pub struct CommandArg(pub Command);

impl TypeName for CommandArg {
    fn type_name() -> &'static str {
        "RawCommand | Array<string | null>"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ValidateNapiValue for CommandArg {}

impl FromNapiValue for CommandArg {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        let mut is_array = false;
        // SAFETY: napi-rs calls this on the JavaScript thread with its live
        // env and a value of it; the out pointer is a local.
        napi::check_status!(unsafe { sys::napi_is_array(env, value, &mut is_array) })?;
        if !is_array {
            // SAFETY: as above.
            return Ok(CommandArg(command(unsafe { RawCommand::from_napi_value(env, value)? })));
        }
        let mut len = 0u32;
        // SAFETY: as above; `value` is an array.
        napi::check_status!(unsafe { sys::napi_get_array_length(env, value, &mut len) })?;
        let mut program = None;
        let mut args = Vec::with_capacity(len.saturating_sub(1) as usize);
        for i in 0..len {
            let mut item: sys::napi_value = std::ptr::null_mut();
            // SAFETY: as above; `i` is below the array's length.
            napi::check_status!(unsafe { sys::napi_get_element(env, value, i, &mut item) })?;
            if i == 0 {
                let mut kind = 0;
                // SAFETY: as above.
                napi::check_status!(unsafe { sys::napi_typeof(env, item, &mut kind) })?;
                if kind == sys::ValueType::napi_null {
                    continue;
                }
                // SAFETY: as above (a non-string is a typed error).
                program = Some(unsafe { String::from_napi_value(env, item)? });
            } else {
                // SAFETY: as above.
                args.push(unsafe { String::from_napi_value(env, item)? });
            }
        }
        let cmd = program.map_or_else(Command::resume, Command::new);
        Ok(CommandArg(cmd.args(args)))
    }
}

pub fn command(raw: RawCommand) -> Command {
    let mut cmd = match (raw.program, raw.image) {
        (Some(p), Some(image)) => Command::from_image(p, image.to_vec()),
        (Some(p), None) => Command::new(p),
        (None, _) => Command::resume(),
    };
    cmd = cmd.args(raw.args);
    if raw.env_clear.unwrap_or(false) {
        cmd = cmd.env_clear();
    }
    for e in raw.env.unwrap_or_default() {
        cmd = cmd.env(e.key, e.value);
    }
    if let Some(input) = raw.stdin {
        cmd = cmd.stdin(&*input);
    }
    for f in raw.files.unwrap_or_default() {
        cmd = cmd.file_with_mode(f.path, &*f.data, f.mode.unwrap_or(hvsandbox::DEFAULT_FILE_MODE));
    }
    if let Some(v) = raw.cwd {
        cmd = cmd.cwd(v);
    }
    for c in raw.collect.unwrap_or_default() {
        cmd = cmd.collect(c);
    }
    cmd.unlimited_streaming(raw.unlimited_streaming.unwrap_or(false))
}

#[napi(object)]
pub struct RawFault {
    pub vector: u32,
    pub error_code: f64,
    pub rip: f64,
    pub address: Option<f64>,
}

#[napi(object)]
pub struct RawCollected {
    pub path: String,
    pub data: Buffer,
}

/// The rare parts of an output (absent from most runs).
#[napi(object)]
pub struct RawExtra {
    pub fault: Option<RawFault>,
    pub files: Vec<RawCollected>,
    /// Syscall number and count, flattened: [nr, count, nr, count, ...].
    pub unknown_syscalls: Vec<f64>,
}

/// An `Output` for JavaScript, made cheaply: every named property set
/// from native code interns its name anew (tens of microseconds for a
/// result object), so it goes as a four-element array that
/// lib/options.js `resultOf` turns into the result object:
/// `[numbers, stdout: Buffer | undefined, stderr: Buffer | undefined,
/// extra: RawExtra | undefined]` (undefined: empty or absent).
///
/// `numbers` is a `Float64Array` of `NUMBERS`, or — for runs settled on
/// the main thread (fast.rs), which keeps a table JavaScript reads them
/// from — the index of their row in that table; and a run with no output
/// and nothing extra is then that index alone, not an array.
pub struct RawOutput {
    numbers: [f64; NUMBERS],
    /// The row of the main thread's table the numbers were written to.
    row: Option<u32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    extra: Option<RawExtra>,
}

/// The layout of `RawOutput`'s numbers (lib/options.js reads the same):
/// exitCode (NaN: none), signal (NaN: none), flags (1: stdout truncated,
/// 2: stderr truncated, 4: files truncated), then the stats wallMs, cpuMs,
/// exits, syscalls, memoryUsed, pageFaults, processes, stdoutBytes,
/// stderrBytes, rewrittenSites, slowSyscalls.
pub const NUMBERS: usize = 14;

impl RawOutput {
    /// Writes the numbers to row `row` of a table instead (`table` points
    /// at that row's `NUMBERS` values).
    pub fn into_row(self, row: u32, table: &mut [f64; NUMBERS]) -> RawOutput {
        *table = self.numbers;
        RawOutput { row: Some(row), ..self }
    }
}

impl ToNapiValue for RawOutput {
    unsafe fn to_napi_value(raw_env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        // SAFETY: napi-rs calls this on the JavaScript thread with its live env.
        let env = unsafe { Env::from_raw(raw_env) };
        let bare = val.stdout.is_empty() && val.stderr.is_empty() && val.extra.is_none();
        let numbers = match val.row {
            // SAFETY: as above.
            Some(row) if bare => return unsafe { u32::to_napi_value(raw_env, row) },
            Some(row) => env.create_uint32(row)?.into_unknown(),
            None => {
                // Copies, not external memory: for the small outputs of
                // most runs a copy costs less than the bookkeeping of an
                // external buffer.
                let mut data: *mut c_void = std::ptr::null_mut();
                let mut buffer: sys::napi_value = std::ptr::null_mut();
                let bytes = NUMBERS * 8;
                // SAFETY: a new ArrayBuffer of `bytes` bytes in this env;
                // `data` points at its memory, written within bounds.
                unsafe {
                    napi::check_status!(sys::napi_create_arraybuffer(raw_env, bytes, &mut data, &mut buffer))?;
                    std::ptr::copy_nonoverlapping(val.numbers.as_ptr().cast::<u8>(), data.cast::<u8>(), bytes);
                }
                // SAFETY: `buffer` is the ArrayBuffer just made in this env.
                unsafe { JsArrayBuffer::from_raw_unchecked(raw_env, buffer) }
                    .into_typedarray(TypedArrayType::Float64, NUMBERS, 0)?
                    .into_unknown()
            }
        };
        let mut array = env.create_array_with_length(4)?;
        array.set_element(0, numbers)?;
        if !val.stdout.is_empty() {
            array.set_element(1, bytes_to_js(&env, val.stdout)?)?;
        }
        if !val.stderr.is_empty() {
            array.set_element(2, bytes_to_js(&env, val.stderr)?)?;
        }
        if let Some(extra) = val.extra {
            // SAFETY: as above (same env, JavaScript thread).
            array.set_element(3, unsafe {
                JsUnknown::from_raw_unchecked(raw_env, RawExtra::to_napi_value(raw_env, extra)?)
            })?;
        }
        // SAFETY: the array is a live value of this env.
        Ok(unsafe { array.raw() })
    }
}

/// A Buffer of `data`: copied when small, handed over when large.
fn bytes_to_js(env: &Env, data: Vec<u8>) -> napi::Result<JsBuffer> {
    if data.len() <= 64 * 1024 {
        Ok(env.create_buffer_copy(&data)?.into_raw())
    } else {
        Ok(env.create_buffer_with_data(data)?.into_raw())
    }
}

pub fn output(o: Output) -> RawOutput {
    let s = &o.stats;
    let flags = u8::from(o.stdout_truncated) | u8::from(o.stderr_truncated) << 1 | u8::from(o.files_truncated) << 2;
    let numbers = [
        o.status.code().map_or(f64::NAN, f64::from),
        o.status.signal().map_or(f64::NAN, f64::from),
        f64::from(flags),
        s.wall.as_secs_f64() * 1000.0,
        s.cpu.as_secs_f64() * 1000.0,
        s.exits as f64,
        s.syscalls as f64,
        s.memory_used as f64,
        s.page_faults as f64,
        s.processes as f64,
        s.stdout_bytes as f64,
        s.stderr_bytes as f64,
        s.rewritten_sites as f64,
        s.slow_syscalls as f64,
    ];
    let extra = (o.fault.is_some() || !o.files.is_empty() || !s.unknown_syscalls.is_empty()).then(|| RawExtra {
        fault: o.fault.map(|f| RawFault {
            vector: f.vector.into(),
            error_code: f.error_code as f64,
            rip: f.rip as f64,
            address: f.address.map(|a| a as f64),
        }),
        files: o.files.into_iter().map(|(path, data)| RawCollected { path, data: data.into() }).collect(),
        unknown_syscalls: s.unknown_syscalls.iter().flat_map(|(&nr, &n)| [f64::from(nr), n as f64]).collect(),
    });
    RawOutput { numbers, row: None, stdout: o.stdout, stderr: o.stderr, extra }
}

/// An `hvsandbox::Error` for JavaScript: index.js makes it an `Error`
/// with `code` `ERR_HVSANDBOX_...` from `kind` (`ErrorKind::code`).
#[napi(object)]
pub struct RawError {
    pub kind: String,
    pub message: String,
    /// The output a stopped run had produced (timeout, cancel, limits).
    pub stdout: Option<Buffer>,
    pub stderr: Option<Buffer>,
    /// Timeout: the limit was on CPU time.
    pub cpu: Option<bool>,
    /// The limit that was hit (ms for a timeout, bytes otherwise).
    pub limit: Option<f64>,
    /// Output limit: "stdout" or "stderr".
    pub stream: Option<String>,
    pub program: Option<String>,
    pub syscall: Option<String>,
    /// The failure left the sandbox unusable.
    pub poisons: bool,
}

fn message(e: &Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

pub fn error(e: Error) -> RawError {
    let mut raw = RawError {
        kind: e.kind().code().to_string(),
        message: message(&e),
        stdout: None,
        stderr: None,
        cpu: None,
        limit: None,
        stream: None,
        program: None,
        syscall: None,
        poisons: e.poisons(),
    };
    if let Some(p) = e.partial_output() {
        raw.stdout = Some(p.stdout.clone().into());
        raw.stderr = Some(p.stderr.clone().into());
    }
    match &e {
        Error::Timeout { limit, cpu, .. } => {
            raw.cpu = Some(*cpu);
            raw.limit = Some(limit.as_secs_f64() * 1000.0);
        }
        Error::MemoryLimitExceeded { limit, .. } => raw.limit = Some(*limit as f64),
        Error::OutputLimitExceeded { stream, limit, .. } => {
            raw.stream = Some((*stream).to_string());
            raw.limit = Some(*limit as f64);
        }
        Error::InvalidProgram { program, .. } => raw.program = Some(program.clone()),
        Error::JailViolation { syscall } => raw.syscall = Some(syscall.clone()),
        _ => {}
    }
    raw
}

pub fn internal(what: &str) -> Error {
    Error::Internal { context: what.to_string(), source: None }
}

/// A snapshot's own facts, for `Snapshot`'s properties.
#[napi(object)]
pub struct RawSnapshotInfo {
    pub point: String,
    pub memory_bytes: f64,
    pub resident_bytes: f64,
    pub max_processes: u32,
    pub max_open_files: u32,
    pub args: Vec<String>,
    pub env: Vec<RawEnv>,
    pub mounts: Vec<RawMount>,
}

pub fn snapshot_info(s: &Snapshot) -> RawSnapshotInfo {
    let lossy = |o: &std::ffi::OsStr| o.to_string_lossy().into_owned();
    RawSnapshotInfo {
        point: match s.point() {
            hvsandbox::SnapshotPoint::Entry => "entry",
            hvsandbox::SnapshotPoint::Checkpoint => "checkpoint",
        }
        .to_string(),
        memory_bytes: s.memory_bytes() as f64,
        resident_bytes: s.resident_bytes() as f64,
        max_processes: s.max_processes(),
        max_open_files: s.max_open_files(),
        args: s.args().map(lossy).collect(),
        env: s.env().map(|(k, v)| RawEnv { key: lossy(k), value: lossy(v) }).collect(),
        mounts: s
            .mounts()
            .map(|(h, g)| RawMount { host: h.to_string_lossy().into_owned(), guest: g.to_string(), kernel_fs: None })
            .collect(),
    }
}
