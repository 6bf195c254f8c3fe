//! ONNX Runtime: finding the shared library, choosing the execution provider,
//! creating the session (batches run in [`crate::model::forward`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use ort::ep::{self, ExecutionProvider};
use ort::logging::LogLevel;
use ort::session::Session;

use crate::model::model_dir::{Dtype, Layout, ModelDir, INPUTS};

mod nvidia;

const SETUP_HINT: &str = "pip install ua-scaling (or onnxruntime) brings it, in a clone scripts/setup (--gpu for CUDA), or set ORT_DYLIB_PATH to a libonnxruntime.so (.dylib on macOS)";

/// The `--device` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            _ => Err(format!("unknown device '{s}' (expected auto, cpu or cuda)")),
        }
    }
}

/// Whether a file name is ONNX Runtime's main library: `libonnxruntime.so`,
/// `libonnxruntime.so.1.32.0` (Linux), `libonnxruntime.dylib`,
/// `libonnxruntime.1.32.0.dylib` (macOS). Provider libraries are not.
fn is_ort_library(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("libonnxruntime") else {
        return false;
    };
    let version = |v: &str| {
        v.split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    rest == ".so"
        || rest == ".dylib"
        || rest.strip_prefix(".so.").is_some_and(version)
        || rest
            .strip_prefix('.')
            .and_then(|r| r.strip_suffix(".dylib"))
            .is_some_and(version)
}

/// The version in a library's file name, if it carries one.
fn version_in_name(name: &str) -> Option<String> {
    if !is_ort_library(name) {
        return None;
    }
    let v = name
        .strip_prefix("libonnxruntime.so.")
        .or_else(|| name.strip_prefix("libonnxruntime.")?.strip_suffix(".dylib"))?;
    Some(v.to_string())
}

/// The library to load among `names`: the unversioned name first, then the shortest.
fn pick_library<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names
        .into_iter()
        .filter(|n| is_ort_library(n))
        .min_by_key(|n| (n.len(), *n))
}

/// ONNX Runtime's library in `dir`, by [`pick_library`].
fn libs_in(dir: &Path) -> Option<PathBuf> {
    let files: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    pick_library(files.iter().map(String::as_str)).map(|n| dir.join(n))
}

/// The `onnxruntime/capi` folders of the Python installation an executable was installed
/// into by pip: `PREFIX/bin/extract` beside `PREFIX/lib/python3.X/{site,dist}-packages`
/// (a virtual environment, `pip install --user`'s `~/.local`, a system prefix).
fn wheel_capi_dirs(exe: &Path) -> Vec<PathBuf> {
    let Some(lib) = exe.parent().and_then(Path::parent).map(|p| p.join("lib")) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&lib) else {
        return Vec::new();
    };
    let mut pythons: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path())
        .collect();
    pythons.sort();
    pythons
        .iter()
        .flat_map(|p| {
            ["site-packages", "dist-packages"].map(|s| p.join(s).join("onnxruntime/capi"))
        })
        .collect()
}

/// Whether an executable is cargo's build output (its folder, or `deps/`'s parent for a test
/// binary, holds cargo's `.cargo-lock`): only such a binary looks for `.ort/` at the workspace
/// root it was built in, so that an installed one never depends on the clone it came from.
fn is_cargo_output(exe: &Path) -> bool {
    exe.ancestors()
        .skip(1)
        .take(2)
        .any(|d| d.join(".cargo-lock").is_file())
}

/// Where the library comes from, in order: `ORT_DYLIB_PATH`; the `onnxruntime` package
/// of the Python installation pip installed this executable into (the wheel's dependency);
/// a project-local `.ort/lib` above the executable, or, for cargo's build output, at the
/// workspace root this was built in; an importable Python `onnxruntime` package.
pub fn find_library() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        if p.is_dir() {
            if let Some(lib) = libs_in(&p) {
                return Ok(lib);
            }
        }
        bail!(
            "ORT_DYLIB_PATH={} is not an ONNX Runtime library; {SETUP_HINT}",
            p.display()
        );
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(wheel_capi_dirs(&exe));
        dirs.extend(exe.ancestors().skip(1).map(|a| a.join(".ort/lib")));
        if is_cargo_output(&exe) {
            dirs.push(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../.ort/lib"
            )));
        }
    }
    for dir in dirs {
        if let Some(lib) = libs_in(&dir) {
            return Ok(lib);
        }
    }
    let py = Command::new("python3")
        .args([
            "-c",
            "import onnxruntime,os;print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    if let Ok(out) = py {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
            if let Some(lib) = libs_in(&dir) {
                return Ok(lib);
            }
        }
    }
    bail!("no ONNX Runtime library found; {SETUP_HINT}")
}

/// The version of the loaded library, from its build info (`git-branch=rel-1.32.0`),
/// else from the library's file name.
fn ort_version(lib: &Path) -> String {
    let info = ort::info();
    if let Some(rest) = info.split("git-branch=rel-").nth(1) {
        let v: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        if !v.is_empty() {
            return v;
        }
    }
    let real = lib.canonicalize().unwrap_or_else(|_| lib.to_path_buf());
    real.file_name()
        .and_then(|n| version_in_name(&n.to_string_lossy()))
        .unwrap_or_else(|| "unknown".to_string())
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .map(|m| {
            format!(
                "{m} ({} threads)",
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            )
        })
        .unwrap_or_else(|| "CPU".to_string())
}

fn gpu_name() -> String {
    let dev = std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .and_then(|v| v.split(',').next().map(str::to_string));
    Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i", "0"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .map(|s| {
            format!(
                "{s} (CUDA device 0{})",
                dev.map(|d| format!(", CUDA_VISIBLE_DEVICES={d}"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "CUDA device 0".to_string())
}

pub struct Runtime {
    pub(crate) session: Session,
    _env: ort::environment::Environment,
    pub library: PathBuf,
    pub ort_version: String,
    /// ONNX Runtime's name of the provider used, e.g. `CPUExecutionProvider`.
    pub provider: &'static str,
    pub device_name: String,
    /// Why this provider, for the summary (e.g. auto's choice).
    pub provider_note: String,
    pub(crate) n_layers: usize,
    pub(crate) hidden: usize,
    pub(crate) dtype: Dtype,
    pub(crate) layout: Layout,
}

pub(crate) fn ort_err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> anyhow::Error {
    move |e| anyhow!("{what}: {e}")
}

impl Runtime {
    pub fn new(model: &ModelDir, device: DeviceChoice) -> Result<Runtime> {
        let library = find_library()?;
        let env = ort::init_from(&library)
            .map_err(|e| {
                anyhow!(
                    "cannot load ONNX Runtime from {} ({e}); {SETUP_HINT}",
                    library.display()
                )
            })?
            .with_name("extract")
            .build()
            .map_err(ort_err("cannot create the ONNX Runtime environment"))?;
        let ort_version = ort_version(&library);
        let want_cuda = wants_cuda(device, &library)?;
        // Before the provider is loaded (at the session's creation), or it would not find them.
        let cuda_libs = want_cuda.then(|| nvidia::preload(&library)).flatten();
        let Opened {
            session,
            provider,
            device_name,
            provider_note,
        } = open_session(
            &env,
            model,
            device,
            want_cuda,
            cuda_hint(&library, cuda_libs),
        )?;
        check_signature(&session, model)?;
        Ok(Runtime {
            session,
            _env: env,
            library,
            ort_version,
            provider,
            device_name,
            provider_note,
            n_layers: model.export.n_layers as usize,
            hidden: model.export.hidden_size as usize,
            dtype: model.dtype,
            layout: model.layout,
        })
    }

    pub fn is_cuda(&self) -> bool {
        self.provider == "CUDAExecutionProvider"
    }
}

/// A session and where it runs.
struct Opened {
    session: Session,
    provider: &'static str,
    device_name: String,
    provider_note: String,
}

/// Whether to try the CUDA provider: `--device cuda` insists (refused where the
/// library has none), `auto` takes it when the library has it.
fn wants_cuda(device: DeviceChoice, library: &Path) -> Result<bool> {
    let cuda_available = <ep::CUDA as ExecutionProvider>::is_available().unwrap_or(false);
    Ok(match device {
        DeviceChoice::Cpu => false,
        DeviceChoice::Cuda if !cuda_available => bail!(
            "--device cuda: the ONNX Runtime at {} has no CUDA provider: onnxruntime-gpu has (ua-scaling's dependency on Linux x86-64; in a clone scripts/setup --gpu), or use --device cpu",
            library.display()
        ),
        DeviceChoice::Cuda => true,
        DeviceChoice::Auto => cuda_available,
    })
}

/// What to do when the CUDA provider fails to start, by where its CUDA libraries were
/// looked for: `cuda_libs` is the `nvidia` folder of the library's site-packages and what
/// was loaded from it ([`nvidia::preload`]).
fn cuda_hint(library: &Path, cuda_libs: Option<(PathBuf, Vec<PathBuf>)>) -> String {
    match cuda_libs {
        Some((dir, loaded)) if !loaded.is_empty() => format!(
            "the CUDA libraries came from {} ({}): check the NVIDIA driver (libcuda.so.1) and the GPU, or use --device cpu",
            dir.display(),
            loaded
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ if nvidia::site_packages_of(library).is_some() => "CUDA 13 and cuDNN 9 come with pip install 'ua-scaling[gpu]' (onnxruntime-gpu[cuda,cudnn]); else check the driver and the system's CUDA libraries, or use --device cpu".to_string(),
        _ => "check the driver, CUDA 13 and cuDNN 9 libraries, or use --device cpu".to_string(),
    }
}

/// Loads the model on CUDA when `want_cuda` (falling back to the CPU under `auto`,
/// with a note saying why), else on the CPU; `cuda_hint` ends a `--device cuda` failure.
fn open_session(
    env: &ort::environment::Environment,
    model: &ModelDir,
    device: DeviceChoice,
    want_cuda: bool,
    cuda_hint: String,
) -> Result<Opened> {
    let builder = || -> Result<ort::session::builder::SessionBuilder> {
        Session::builder(env)
            .map_err(ort_err("cannot create a session builder"))?
            .with_log_level(LogLevel::Error)
            .map_err(ort_err("cannot set the log level"))
    };
    let commit = |mut b: ort::session::builder::SessionBuilder| -> Result<Session> {
        b.commit_from_file(&model.onnx).map_err(|e| {
            anyhow!(
                "cannot load {} into ONNX Runtime: {e}",
                model.onnx.display()
            )
        })
    };
    let on_cpu = |note: String| -> Result<Opened> {
        // Every batch has another shape, so a memory pattern planned for one shape is
        // never reused; without one, ONNX Runtime's passes over the seed dataset on
        // Gemma-3-270M were 5-15% faster (docs/benchmarks.md, "The memory pattern").
        let cpu = builder()?
            .with_memory_pattern(false)
            .map_err(ort_err("cannot turn off the memory pattern"))?;
        Ok(Opened {
            session: commit(cpu)?,
            provider: "CPUExecutionProvider",
            device_name: cpu_name(),
            provider_note: note,
        })
    };
    if !want_cuda {
        return on_cpu(
            match device {
                DeviceChoice::Auto => "auto: this ONNX Runtime has no CUDA provider, using the CPU",
                _ => "cpu",
            }
            .to_string(),
        );
    }
    // TF32 matmuls broke float32 parity with transformers to 1e-2: keep full precision.
    let cuda = ep::CUDA::default()
        .with_tf32(false)
        .build()
        .error_on_failure();
    let attempt = builder()?
        .with_execution_providers([cuda])
        .map_err(|e| anyhow!("{e}"))
        .and_then(commit);
    match attempt {
        Ok(session) => Ok(Opened {
            session,
            provider: "CUDAExecutionProvider",
            device_name: gpu_name(),
            provider_note: match device {
                DeviceChoice::Auto => "auto: CUDA available",
                _ => "cuda",
            }
            .to_string(),
        }),
        Err(e) => {
            // The provider's messages span lines; the error and the note are one line.
            let why = format!("{e:#}").replace('\n', " ");
            if device == DeviceChoice::Cuda {
                bail!("--device cuda: the CUDA provider failed to start ({why}); {cuda_hint}")
            }
            on_cpu(format!(
                "auto: CUDA provider failed to start ({why}), using the CPU"
            ))
        }
    }
}

/// The graph must take `input_ids` and `attention_mask` (rank 2) and give the
/// outputs of its layout (export.json's "outputs") at their ranks.
fn check_signature(session: &Session, model: &ModelDir) -> Result<()> {
    let onnx = model.onnx.display().to_string();
    let inputs = INPUTS
        .iter()
        .zip([2usize, 2])
        .map(|(n, r)| ("input", session.inputs(), *n, r));
    let ranks: &[usize] = match model.layout {
        Layout::Reduced => &[4, 1, 1],
        Layout::TokenStates => &[4, 2],
    };
    let outputs = model
        .layout
        .outputs()
        .iter()
        .zip(ranks.iter().copied())
        .map(|(n, r)| ("output", session.outputs(), *n, r));
    for (kind, ports, want, rank) in inputs.chain(outputs) {
        let port = ports.iter().find(|p| p.name() == want).ok_or_else(|| {
            let names: Vec<&str> = ports.iter().map(|p| p.name()).collect();
            anyhow!("{onnx}: the graph has no {kind} '{want}' ({kind}s: {names:?})")
        })?;
        check_rank(port, rank, &onnx)?;
    }
    if model.layout == Layout::Reduced {
        check_pooled_shape(session, model, &onnx)?;
    }
    Ok(())
}

/// The pooled output's fixed axes must be export.json's: a graph of another
/// model would otherwise fail only at the first batch, in ONNX Runtime's words.
fn check_pooled_shape(session: &Session, model: &ModelDir, onnx: &str) -> Result<()> {
    let want = [
        -1,
        i64::from(model.export.n_layers) + 1,
        3,
        i64::from(model.export.hidden_size),
    ];
    let Some(shape) = session
        .outputs()
        .iter()
        .find(|p| p.name() == "pooled")
        .and_then(|p| p.dtype().tensor_shape())
    else {
        return Ok(());
    };
    let fits = shape
        .iter()
        .zip(want)
        .all(|(&d, w)| d < 0 || w < 0 || d == w);
    if !fits {
        bail!(
            "{onnx}: output 'pooled' has shape {:?} but export.json describes [batch, n_layers+1, 3, hidden] = [batch, {}, 3, {}]: the graph comes from another export; re-export with scripts/export",
            &**shape, want[1], want[3]
        );
    }
    Ok(())
}

fn check_rank(outlet: &ort::value::Outlet, rank: usize, onnx: &str) -> Result<()> {
    let shape = outlet
        .dtype()
        .tensor_shape()
        .with_context(|| format!("{onnx}: '{}' is not a tensor", outlet.name()))?;
    if shape.len() != rank {
        bail!(
            "{onnx}: '{}' has rank {} but extract needs rank {rank}",
            outlet.name(),
            shape.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_of_linux_and_macos() {
        for good in [
            "libonnxruntime.so",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime.dylib",
            "libonnxruntime.1.32.0.dylib",
        ] {
            assert!(is_ort_library(good), "{good}");
        }
        for bad in [
            "libonnxruntime_providers_shared.so",
            "libonnxruntime_providers_cuda.so",
            "libonnxruntime.so.1.32.0.tmp",
            "libonnxruntime.so.",
            "libonnxruntime.dll",
            "libonnxruntime.x.dylib",
            "onnxruntime.so",
        ] {
            assert!(!is_ort_library(bad), "{bad}");
        }
    }

    #[test]
    fn versions_come_from_the_name() {
        assert_eq!(
            version_in_name("libonnxruntime.so.1.32.0").as_deref(),
            Some("1.32.0")
        );
        assert_eq!(
            version_in_name("libonnxruntime.1.31.1.dylib").as_deref(),
            Some("1.31.1")
        );
        assert_eq!(version_in_name("libonnxruntime.so"), None);
    }

    #[test]
    fn an_installed_binary_looks_in_its_own_python_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let venv = tmp.path().join("venv");
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::fs::create_dir_all(venv.join("lib/python3.11/site-packages")).unwrap();
        std::fs::create_dir_all(venv.join("lib/pkgconfig")).unwrap();
        let exe = venv.join("bin/extract");
        let lib = venv.join("lib/python3.11");
        assert_eq!(
            wheel_capi_dirs(&exe),
            [
                lib.join("site-packages/onnxruntime/capi"),
                lib.join("dist-packages/onnxruntime/capi")
            ]
        );
        assert!(wheel_capi_dirs(Path::new("/extract")).is_empty());
        // Only cargo's output falls back to the clone it was built in.
        assert!(!is_cargo_output(&exe));
        let release = tmp.path().join("target/release");
        std::fs::create_dir_all(&release).unwrap();
        std::fs::write(release.join(".cargo-lock"), b"").unwrap();
        assert!(is_cargo_output(&release.join("extract")));
        assert!(is_cargo_output(&release.join("deps/extract-0123abcd")));
    }

    #[test]
    fn the_unversioned_library_is_preferred() {
        let linux = [
            "libonnxruntime_providers_shared.so",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime.so",
        ];
        assert_eq!(pick_library(linux), Some("libonnxruntime.so"));
        // a Python wheel's capi folder holds only the versioned name
        let wheel = [
            "libonnxruntime.1.32.0.dylib",
            "libonnxruntime_providers_shared.dylib",
        ];
        assert_eq!(pick_library(wheel), Some("libonnxruntime.1.32.0.dylib"));
        assert_eq!(pick_library(["README"]), None);
    }
}
