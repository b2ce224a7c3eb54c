//! Crash safety of `pixtral convert` (docs/SECURITY.md): killed with SIGKILL at random moments, the output
//! paths hold either nothing or a complete file; a file size limit (a full disk as the writer sees it) and a
//! read-only destination fail with a message and leave nothing.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{fixtures, Rng, RngExt, TempDir};

fn convert_cmd(out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pixtral"));
    c.args(["convert", fixtures().join("tiny/hf").to_str().unwrap(), "--outtype", "f32", "--vision-type", "f32"]);
    c.arg("-o").arg(out).arg("--force");
    c
}

/// Whatever is at `path` is absent or a whole, valid file equal to `reference`.
fn absent_or_complete(path: &Path, reference: &[u8]) -> bool {
    match std::fs::read(path) {
        Err(_) => false,
        Ok(b) => {
            assert!(
                b == reference,
                "{} exists but differs from a complete conversion ({} bytes)",
                path.display(),
                b.len()
            );
            pixtral::gguf::Header::parse(&b).expect("a complete file parses");
            true
        }
    }
}

#[test]
fn sigkill_at_random_moments_leaves_absent_or_complete_outputs() {
    let dir = TempDir::new("crash");
    // the reference: one undisturbed run, and how long it takes
    let refp = dir.join("ref.gguf");
    let t0 = Instant::now();
    assert!(convert_cmd(&refp).output().unwrap().status.success());
    let took = t0.elapsed();
    let (ref_text, ref_mm) = (std::fs::read(&refp).unwrap(), std::fs::read(dir.join("ref.mmproj.gguf")).unwrap());
    let mut rng = Rng(2024);
    let (mut complete, mut absent) = (0, 0);
    for seed in 0..12 {
        let run = dir.join(&format!("run{seed}"));
        std::fs::create_dir_all(&run).unwrap();
        let out = run.join("m.gguf");
        let mut child = convert_cmd(&out).stderr(std::process::Stdio::null()).spawn().unwrap();
        // anywhere from start-up to a little after the usual end
        let at = Duration::from_micros(rng.below(took.as_micros() as u64 * 12 / 10 + 1));
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL: no handler runs, no cleanup
        let _ = child.wait();
        let text = absent_or_complete(&out, &ref_text);
        let mm = absent_or_complete(&run.join("m.mmproj.gguf"), &ref_mm);
        // the text file is renamed last: a complete text file means a complete mmproj
        assert!(!text || mm, "seed {seed}: text complete without its mmproj");
        if text {
            complete += 1
        } else {
            absent += 1
        }
        // only the .partial files may be left over, and nothing else
        for e in std::fs::read_dir(&run).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(name.ends_with(".partial") || name == "m.gguf" || name == "m.mmproj.gguf", "{name}");
        }
    }
    eprintln!("killed 12 conversions (a full run takes {took:?}): {complete} complete, {absent} absent");
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_file_size_limit_fails_with_the_sizes_and_leaves_nothing() {
    let dir = TempDir::new("fsize");
    let out = dir.join("m.gguf");
    let mut cmd = convert_cmd(&out);
    // SAFETY: between fork and exec only async-signal-safe calls (signal, setrlimit).
    unsafe {
        cmd.pre_exec(|| {
            // a write past the limit fails with EFBIG instead of killing the process with SIGXFSZ
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: 64 << 10, rlim_max: 64 << 10 };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let e = stderr_of(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("the output needs") && e.contains("were written") && e.contains("bytes are free"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "left behind: {e}");
}

#[test]
fn a_read_only_destination_fails_cleanly() {
    // root ignores directory permissions: use a read-only file system then (sysfs is mounted read-only in
    // containers and needs nothing of us); otherwise a directory without write permission
    let dir = TempDir::new("readonly");
    let root = unsafe { libc::geteuid() } == 0;
    let target = if root { Path::new("/sys").to_path_buf() } else { dir.join("ro") };
    if !root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let out = target.join("pixtral-test.gguf");
    let o = convert_cmd(&out).output().unwrap();
    let e = stderr_of(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains(&target.display().to_string()), "{e}");
    assert!(!out.exists() && !target.join("pixtral-test.gguf.partial").exists());
    assert!(!target.join("pixtral-test.mmproj.gguf").exists());
}
