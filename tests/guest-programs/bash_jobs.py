# An interactive bash on a pseudo-terminal, driven as a person would: a
# job started, stopped with ^Z, listed, continued in the background and
# killed. Prints what it saw; the test runs it natively and in the guest
# and compares.
import os, pty, time, select, sys, re
pid, fd = pty.fork()
if pid == 0:
    os.environ["PS1"] = "$ "
    os.environ["TERM"] = "dumb"
    os.execv("/bin/bash", ["bash", "--norc", "--noprofile", "-i"])
def read_until(pat, timeout=10):
    buf = b""
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                d = os.read(fd, 4096)
            except OSError:
                break
            if not d: break
            buf += d
            if re.search(pat, buf): break
    return buf.decode(errors="replace")
read_until(rb"\$ $")
os.write(fd, b"sleep 30\n")
# ^Z until the job has started and stopped (one that comes before bash
# gives the job the terminal reaches bash, which ignores it).
out = ""
for _ in range(50):
    time.sleep(0.2)
    os.write(fd, b"\x1a")
    out += read_until(rb"(?s)Stopped.*\$ $", 0.5)
    if "Stopped" in out:
        break
print("after ^Z:", "Stopped" in out)
os.write(fd, b"jobs\n"); out = read_until(rb"\$ $"); print("jobs:", re.search(r"\[1\]\+\s+Stopped\s+sleep 30", out) is not None)
os.write(fd, b"bg\n"); out = read_until(rb"\$ $"); print("bg:", "sleep 30 &" in out)
os.write(fd, b"jobs\n"); out = read_until(rb"\$ $"); print("running:", "Running" in out)
os.write(fd, b"kill %1; wait %1; echo status $?\n"); out = read_until(rb"status \d+\r\n"); print("killed:", "status 143" in out)
os.write(fd, b"exit\n"); read_until(rb"$^", 2)
_, st = os.waitpid(pid, 0); print("bash exit:", os.waitstatus_to_exitcode(st))
