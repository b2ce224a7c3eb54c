//! A pseudo-terminal driver for testing the REPL as a person uses it: the child gets a real terminal
//! (line editing, raw mode, Ctrl-C as SIGINT through the line discipline), the test types and reads.
//!
//! Safety contract: `openpty` gets valid out-pointers; in `pre_exec` (between fork and exec) only
//! async-signal-safe calls are made (`setsid`, `ioctl`).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pty {
    master: std::fs::File,
    pub child: Child,
    /// everything read so far
    pub out: String,
    /// how far `expect` has consumed `out`
    seen: usize,
}

impl Pty {
    /// Spawn `cmd` with stdin, stdout and stderr on a new 80x24 terminal that is its controlling terminal.
    pub fn spawn(mut cmd: Command) -> Pty {
        let (mut master, mut slave) = (0, 0);
        let ws = libc::winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: see the module contract.
        let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned two fresh descriptors we now own.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .env("TERM", "xterm");
        // SAFETY: see the module contract.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn the REPL");
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fl = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(master.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Pty { master: std::fs::File::from(master), child, out: String::new(), seen: 0 }
    }

    /// Type `s` (use "\r" for Enter, "\x03" for Ctrl-C, "\x04" for Ctrl-D).
    pub fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    fn pump(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.out.push_str(&String::from_utf8_lossy(&buf[..n]));
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                true
            }
            // EIO: the child closed the terminal (it exited)
            Err(_) => false,
        }
    }

    /// Wait until `pat` appears after what earlier calls consumed; returns the text up to and including it.
    pub fn expect(&mut self, pat: &str, timeout: Duration) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(i) = self.out[self.seen..].find(pat) {
                let got = self.out[self.seen..self.seen + i + pat.len()].to_string();
                self.seen += i + pat.len();
                return got;
            }
            if t0.elapsed() > timeout || !self.pump() {
                panic!(
                    "waited {:?} for {pat:?}; the terminal shows after the last match:\n{}",
                    timeout,
                    &self.out[self.seen..]
                );
            }
        }
    }

    /// Read until the child exits; its exit status.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            self.pump();
            if let Some(st) = self.child.try_wait().unwrap() {
                while self.pump() {}
                return st;
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("the REPL did not exit within {timeout:?}; it shows:\n{}", &self.out[self.seen..]);
            }
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
