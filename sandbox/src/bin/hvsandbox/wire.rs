//! What `hvsandbox run --server` and `hvsandbox serve` say to each other
//! over the server's unix socket: one request from the client (its
//! timeout, the program's argv and environment, with the client's stdin,
//! stdout and stderr passed as descriptors beside it), then one byte
//! back: the exit code the client exits with. Anything the run prints,
//! the server writes to the client's descriptors itself, its error line
//! included.
//!
//! A request is one frame: its length (u32, little-endian), then the
//! magic, the timeout in microseconds (u64), flags (u32: [`STATS`]), argc
//! (u32) and each argument
//! (u32 length, bytes), envc (u32) and each `K=V` (the same). The server
//! reads at most [`MAX_REQUEST`] bytes and checks every length against
//! what is left, so a hostile client gets an error, never a large
//! allocation.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The first bytes of every request (the 1 is the protocol's version).
const MAGIC: &[u8; 4] = b"HVS1";

/// The largest request a server reads: Linux's own limit on a program's
/// arguments and environment is 2 MiB by default.
pub(crate) const MAX_REQUEST: usize = 4 << 20;

/// Why a request that took longer than its wait was refused.
const TOO_LATE: &str = "the request did not come in time";

/// Flag: the client wants the `--stats` line on its stderr.
pub(crate) const STATS: u32 = 1;

/// The descriptors that come with a request: stdin, stdout, stderr.
const FDS: usize = 3;

/// One run asked of the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) timeout: Duration,
    /// [`STATS`] or none.
    pub(crate) flags: u32,
    /// The program (a path on the host, or a bare name) and its arguments.
    pub(crate) argv: Vec<Vec<u8>>,
    /// `K=V` each.
    pub(crate) env: Vec<Vec<u8>>,
}

impl Request {
    /// The request as one frame, its length first.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(MAGIC);
        let us = u64::try_from(self.timeout.as_micros()).unwrap_or(u64::MAX);
        body.extend_from_slice(&us.to_le_bytes());
        body.extend_from_slice(&self.flags.to_le_bytes());
        for list in [&self.argv, &self.env] {
            body.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for item in list {
                body.extend_from_slice(&(item.len() as u32).to_le_bytes());
                body.extend_from_slice(item);
            }
        }
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    }

    /// A frame's body (after its length) back into a request.
    pub(crate) fn decode(body: &[u8]) -> Result<Request, String> {
        let mut r = Reader(body);
        if r.take(4)? != MAGIC {
            return Err("not an hvsandbox request (or another version's)".into());
        }
        let us = u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| "short request")?);
        let flags = r.u32()? as u32;
        if flags & !STATS != 0 {
            return Err("unknown request flags (another version's client)".into());
        }
        let argv = r.list()?;
        let env = r.list()?;
        if !r.0.is_empty() {
            return Err("trailing bytes after the request".into());
        }
        if argv.is_empty() {
            return Err("no program given".into());
        }
        Ok(Request { timeout: Duration::from_micros(us), flags, argv, env })
    }
}

/// Reads a request's fields, each checked against what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("short request".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn list(&mut self) -> Result<Vec<Vec<u8>>, String> {
        let n = self.u32()?;
        // Each item takes 4 bytes at least: a count past that is a lie.
        if n > self.0.len() / 4 {
            return Err("short request".into());
        }
        (0..n).map(|_| self.u32().and_then(|len| self.take(len)).map(<[u8]>::to_vec)).collect()
    }
}

/// Sends `frame` with this process's stdin, stdout and stderr beside it.
pub(crate) fn send_with_stdio(sock: &UnixStream, frame: &[u8]) -> std::io::Result<()> {
    let fds: [RawFd; FDS] = [0, 1, 2];
    let mut iov = libc::iovec { iov_base: frame.as_ptr() as *mut libc::c_void, iov_len: frame.len() };
    let mut control = [0u64; 8];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(&fds) as u32) } as usize;
    // SAFETY: an all-zero msghdr is a valid value of this plain C struct.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` points at `control`, which has room for one header
    // and three descriptors (CMSG_SPACE(12) = 32 of its 64 bytes); the
    // header and data pointers come from the CMSG macros over it.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(&fds) as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), FDS);
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The descriptors went with the first byte; the rest follows plainly.
    (&*sock).write_all(&frame[sent as usize..])
}

/// A request that was not taken: why, and the client's stderr if the
/// request came with its descriptors (to tell it why).
pub(crate) struct Refused {
    pub(crate) why: String,
    pub(crate) stderr: Option<OwnedFd>,
}

impl From<String> for Refused {
    fn from(why: String) -> Refused {
        Refused { why, stderr: None }
    }
}

/// Receives one request and the three descriptors sent with it, all of
/// it within `wait` (a client that trickles its bytes gets no more).
/// Fails on a frame that is too large or malformed, or without exactly
/// three descriptors (any that came are closed).
pub(crate) fn receive(sock: &UnixStream, wait: Duration) -> Result<(Request, [OwnedFd; FDS]), Refused> {
    let deadline = std::time::Instant::now() + wait;
    // Each read waits at most for what is left of `wait`.
    let time_left = || -> Result<(), String> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(TOO_LATE.into());
        }
        sock.set_read_timeout(Some(left)).map_err(|e| format!("cannot read the request: {e}"))
    };
    time_left()?;
    let mut head = [0u8; 4];
    let mut iov = libc::iovec { iov_base: head.as_mut_ptr().cast(), iov_len: head.len() };
    let mut control = [0u64; 16];
    // SAFETY: an all-zero msghdr is a valid value of this plain C struct.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` points at `head` and `control`, both live and of the
    // sizes given.
    let got = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if got < 0 {
        return Err(format!("cannot read the request: {}", std::io::Error::last_os_error()).into());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to msg_controllen; the CMSG
    // macros walk it within that length. Each descriptor is taken once.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let n = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..n {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let fds: [OwnedFd; FDS] = match fds.try_into() {
        Ok(fds) if msg.msg_flags & libc::MSG_CTRUNC == 0 => fds,
        _ => return Err(String::from("a request comes with stdin, stdout and stderr").into()),
    };
    let [stdin, stdout, stderr] = fds;
    let read = || -> Result<Request, String> {
        let mut head = head;
        let rest = (got as usize).min(4);
        let fill = |buf: &mut [u8], from: usize| -> Result<(), String> {
            let mut at = from;
            while at < buf.len() {
                time_left()?;
                match (&*sock).read(&mut buf[at..]) {
                    Ok(0) => return Err("short request".into()),
                    Ok(n) => at += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // (SO_RCVTIMEO ran out.)
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        return Err(TOO_LATE.into())
                    }
                    Err(e) => return Err(format!("cannot read the request: {e}")),
                }
            }
            Ok(())
        };
        fill(&mut head, rest)?;
        let len = u32::from_le_bytes(head) as usize;
        if len > MAX_REQUEST {
            return Err(format!("the request is larger than {} MiB", MAX_REQUEST >> 20));
        }
        let mut body = vec![0u8; len];
        fill(&mut body, 0)?;
        Request::decode(&body)
    };
    match read() {
        Ok(request) => Ok((request, [stdin, stdout, stderr])),
        Err(why) => Err(Refused { why, stderr: Some(stderr) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips() {
        let req = Request {
            timeout: Duration::from_millis(1500),
            flags: STATS,
            argv: vec![b"/bin/busybox".to_vec(), b"echo".to_vec(), vec![0xff, 0]],
            env: vec![b"A=1".to_vec()],
        };
        let frame = req.encode();
        assert_eq!(u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
        assert_eq!(Request::decode(&frame[4..]).unwrap(), req);
    }

    #[test]
    fn bad_requests_are_errors() {
        let good =
            Request { timeout: Duration::from_secs(1), flags: 0, argv: vec![b"x".to_vec()], env: vec![] }.encode();
        let body = &good[4..];
        // Every cut of a good request is short, never a panic.
        for cut in 0..body.len() {
            assert!(Request::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert!(Request::decode(&trailing).is_err());
        let mut magic = body.to_vec();
        magic[3] = b'9';
        assert!(Request::decode(&magic).unwrap_err().contains("version"));
        // A count or length far past the frame is refused up front.
        let mut huge = body.to_vec();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Request::decode(&huge).is_err());
        let mut flags = body.to_vec();
        flags[12] = 2;
        assert!(Request::decode(&flags).unwrap_err().contains("flags"));
        let none = Request { timeout: Duration::from_secs(1), flags: 0, argv: vec![], env: vec![] }.encode();
        assert_eq!(Request::decode(&none[4..]).unwrap_err(), "no program given");
    }
}
