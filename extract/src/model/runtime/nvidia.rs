//! The CUDA libraries of pip's `nvidia-*` wheels (`SITE/nvidia/*/lib`), loaded before ONNX
//! Runtime's CUDA provider, as `onnxruntime.preload_dlls` does for Python: the dynamic loader
//! never looks in site-packages, but a library already loaded satisfies every later lookup of
//! its soname, so the provider then starts without a hand-set `LD_LIBRARY_PATH`.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The CUDA provider's file name beside the main library (Linux).
const CUDA_PROVIDER: &str = "libonnxruntime_providers_cuda.so";

/// The site-packages folder of an ONNX Runtime library that a Python wheel installed
/// (`SITE/onnxruntime/capi/libonnxruntime.so.X`); None for any other place (`.ort/lib`).
pub(super) fn site_packages_of(library: &Path) -> Option<PathBuf> {
    let capi = library.parent()?;
    let package = capi.parent()?;
    if capi.file_name()? != "capi" || package.file_name()? != "onnxruntime" {
        return None;
    }
    package.parent().map(Path::to_path_buf)
}

/// `SITE/nvidia/*/lib`, sorted: `nvidia/cu13/lib` (CUDA 13's consolidated wheels),
/// `nvidia/cudnn/lib`, and CUDA 12's one folder per library (`nvidia/cublas/lib`, ...).
fn nvidia_lib_dirs(site: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(site.join("nvidia")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("lib"))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Whether `name` is `STEM.so.N` (a soname: the name the loader looks for), N digits.
fn is_soname_of(name: &str, stem: &str) -> bool {
    name.strip_prefix(stem)
        .and_then(|r| r.strip_prefix(".so."))
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
}

/// What to load, in order: each library the provider links (its DT_NEEDED, `needed`) that one
/// of `dirs` holds, in the provider's own order (cuBLASLt before cuBLAS, which needs it), then
/// cuDNN's main library `libcudnn.so.N`, which the provider opens by name at its first use
/// rather than links (cuDNN finds its other libraries beside itself). What no folder holds is
/// left to the loader: the driver's `libcuda.so.1` never comes from pip, and the error that
/// names it is the one the user must see.
fn plan(needed: &[String], dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = needed
        .iter()
        .filter_map(|n| dirs.iter().map(|d| d.join(n)).find(|p| p.is_file()))
        .collect();
    let cudnn = dirs.iter().find_map(|d| {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| is_soname_of(n, "libcudnn"))
            .collect();
        names.sort();
        names.pop().map(|n| d.join(n))
    });
    out.extend(cudnn);
    out
}

/// The DT_NEEDED entries of a 64-bit little-endian ELF shared library (every Linux the CUDA
/// wheels exist for), in file order; None for anything else. Reads only the section headers,
/// the dynamic section and its string table (a few KB of a 280 MB provider).
pub(super) fn elf_needed(path: &Path) -> Option<Vec<String>> {
    const SHT_DYNAMIC: u32 = 6;
    const DT_NEEDED: u64 = 1;
    let mut f = File::open(path).ok()?;
    let mut head = [0u8; 64];
    f.read_exact(&mut head).ok()?;
    if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let mut read = |offset: u64, len: u64| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(len).ok().filter(|&n| n <= 1 << 24)?];
        f.seek(SeekFrom::Start(offset)).ok()?;
        f.read_exact(&mut buf).ok()?;
        Some(buf)
    };
    let (shoff, shentsize, shnum) = (
        u64_at(&head, 0x28),
        u64::from(u16_at(&head, 0x3A)),
        u64::from(u16_at(&head, 0x3C)),
    );
    if shentsize < 64 {
        return None;
    }
    let sections = read(shoff, shentsize * shnum)?;
    let section = |i: usize| &sections[i * shentsize as usize..][..64];
    let dynamic = (0..shnum as usize).find(|&i| u32_at(section(i), 4) == SHT_DYNAMIC)?;
    let dynsec = section(dynamic);
    let strtab = section(
        usize::try_from(u32_at(dynsec, 40))
            .ok()
            .filter(|&i| i < shnum as usize)?,
    );
    let entries = read(u64_at(dynsec, 24), u64_at(dynsec, 32))?;
    let strings = read(u64_at(strtab, 24), u64_at(strtab, 32))?;
    let names = entries
        .chunks_exact(16)
        .filter(|e| u64_at(e, 0) == DT_NEEDED)
        .filter_map(|e| {
            let at = usize::try_from(u64_at(e, 8)).ok()?;
            let s = strings.get(at..)?;
            let end = s.iter().position(|&c| c == 0)?;
            Some(String::from_utf8_lossy(&s[..end]).into_owned())
        })
        .collect();
    Some(names)
}

/// Loads the CUDA libraries that the CUDA provider beside `library` needs from the `nvidia-*`
/// wheels of the same site-packages, and returns the `nvidia` folder with what was loaded
/// (None where `library` is not from a Python wheel or no such wheel is installed).
pub(super) fn preload(library: &Path) -> Option<(PathBuf, Vec<PathBuf>)> {
    let site = site_packages_of(library)?;
    let dirs = nvidia_lib_dirs(&site);
    if dirs.is_empty() {
        return None;
    }
    let needed = elf_needed(&library.with_file_name(CUDA_PROVIDER)).unwrap_or_default();
    let loaded = plan(&needed, &dirs)
        .into_iter()
        .filter(|p| load_global(p))
        .collect();
    Some((site.join("nvidia"), loaded))
}

/// `dlopen(path, RTLD_NOW | RTLD_GLOBAL)`, never closed: the library must stay loaded for the
/// provider that is loaded after it. False where it does not load (the provider's own error
/// then names what is missing).
fn load_global(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; the handle is deliberately leaked, and the
    // libraries run no code of ours. dlopen is thread-safe.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    !handle.is_null()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) -> PathBuf {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"").unwrap();
        p
    }

    #[test]
    fn a_wheel_library_names_its_site_packages() {
        let site = Path::new("/v/lib/python3.11/site-packages");
        let lib = site.join("onnxruntime/capi/libonnxruntime.so.1.31.1");
        assert_eq!(site_packages_of(&lib).as_deref(), Some(site));
        assert_eq!(
            site_packages_of(Path::new("/repo/.ort/lib/libonnxruntime.so")),
            None
        );
        assert_eq!(
            site_packages_of(Path::new("/x/capi/libonnxruntime.so")),
            None
        );
    }

    /// The layout `pip install onnxruntime-gpu[cuda,cudnn]` leaves (CUDA 13: one consolidated
    /// folder; cuDNN its own), beside torch's CUDA 12 wheels (a folder per library).
    #[test]
    fn the_provider_s_libraries_come_from_the_nvidia_wheels_in_its_order() {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path();
        let cu13 = [
            "libcublasLt.so.13",
            "libcublas.so.13",
            "libcurand.so.10",
            "libcudart.so.13",
            "libcufft.so.12",
            "libnvrtc.so.13",
        ];
        for n in cu13 {
            touch(site, &format!("nvidia/cu13/lib/{n}"));
        }
        for n in ["libcudnn.so.9", "libcudnn_ops.so.9", "libcudnn_graph.so.9"] {
            touch(site, &format!("nvidia/cudnn/lib/{n}"));
        }
        touch(site, "nvidia/cublas/lib/libcublasLt.so.12");
        touch(site, "nvidia/cublas/lib/libcublas.so.12");
        touch(site, "nvidia/cu13/include/cuda.h");
        let dirs = nvidia_lib_dirs(site);
        assert_eq!(
            dirs,
            ["cu13", "cublas", "cudnn"].map(|d| site.join("nvidia").join(d).join("lib"))
        );
        // The provider's DT_NEEDED of onnxruntime-gpu 1.31.1, as readelf lists it.
        let needed: Vec<String> = [
            "libcublasLt.so.13",
            "libcublas.so.13",
            "libcurand.so.10",
            "libcudart.so.13",
            "libcuda.so.1",
            "libdl.so.2",
            "libstdc++.so.6",
            "libc.so.6",
        ]
        .map(String::from)
        .to_vec();
        let want: Vec<PathBuf> = [
            "cu13/lib/libcublasLt.so.13",
            "cu13/lib/libcublas.so.13",
            "cu13/lib/libcurand.so.10",
            "cu13/lib/libcudart.so.13",
            "cudnn/lib/libcudnn.so.9",
        ]
        .map(|r| site.join("nvidia").join(r))
        .to_vec();
        assert_eq!(plan(&needed, &dirs), want);
        // No nvidia wheels: nothing to load, and the loader's own search decides.
        let bare = tempfile::tempdir().unwrap();
        assert!(nvidia_lib_dirs(bare.path()).is_empty());
        assert!(plan(&needed, &nvidia_lib_dirs(bare.path())).is_empty());
    }

    #[test]
    fn sonames_only() {
        assert!(is_soname_of("libcudnn.so.9", "libcudnn"));
        assert!(!is_soname_of("libcudnn_ops.so.9", "libcudnn"));
        assert!(!is_soname_of("libcudnn.so.9.1.0", "libcudnn"));
        assert!(!is_soname_of("libcudnn.so", "libcudnn"));
    }

    /// The reader on a real ELF file: this test binary links the C library.
    #[test]
    fn the_elf_reader_lists_what_a_binary_links() {
        let exe = std::env::current_exe().unwrap();
        let needed = elf_needed(&exe).expect("the test binary is a 64-bit ELF file");
        assert!(needed.iter().any(|n| n == "libc.so.6"), "{needed:?}");
        let tmp = tempfile::tempdir().unwrap();
        let not_elf = touch(tmp.path(), "libonnxruntime_providers_cuda.so");
        std::fs::write(
            &not_elf,
            b"not an ELF file, but long enough to hold an ELF header: 0123456789",
        )
        .unwrap();
        assert_eq!(elf_needed(&not_elf), None);
        assert_eq!(elf_needed(&tmp.path().join("missing.so")), None);
    }

    /// A real library loads with RTLD_GLOBAL; a file that is no library does not.
    #[cfg(target_os = "linux")]
    #[test]
    fn loading_reports_success() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!load_global(&touch(tmp.path(), "libempty.so.1")));
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/libc.so.6",
            "/usr/lib/libc.so.6",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("the C library, libc.so.6, in /lib/x86_64-linux-gnu, /lib64 or /usr/lib");
        assert!(load_global(libc));
    }
}
