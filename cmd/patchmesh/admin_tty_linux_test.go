package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: the test reads and writes the
// master side, the command under test gets the terminal side.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// drain copies what the terminal shows into a buffer; stop closes the
// terminal side, which ends the master's reads, and waits for the copy.
func drain(master, tty *os.File) (get func() string, stop func()) {
	var mu sync.Mutex
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			mu.Lock()
			buf.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	get = func() string {
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
	stop = func() {
		tty.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
	return get, stop
}

func TestAdminUploadShowsProgressOnATerminal(t *testing.T) {
	n := newTestNode(t)
	n.login()
	master, tty := openPTY(t)
	get, stop := drain(master, tty)

	path, _ := writePatchFile(t, bytes.Repeat([]byte("k"), 200_000))
	var stdout bytes.Buffer
	env := map[string]string{"PATCHMESH_URL": n.srv.URL, "PATCHMESH_CONFIG_DIR": n.cfgDir}
	a := &admin{stdin: strings.NewReader(""), stdout: &stdout, stderr: tty, getenv: func(k string) string { return env[k] }, now: time.Now}
	code := a.run(context.Background(), []string{"patches", "upload", path, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "3", "--output", "json"})
	stop()
	if code != exitOK {
		t.Fatalf("upload: exit %d; terminal shows %q", code, get())
	}
	if shown := get(); !strings.Contains(shown, "uploading") || !strings.Contains(shown, "(100%)") {
		t.Errorf("terminal shows %q, want an upload progress line reaching 100%%", shown)
	}
	if strings.Contains(stdout.String(), "uploading") {
		t.Error("progress went to stdout; want it only on the terminal (stderr)")
	}
}

func TestAdminLoginPromptsWithoutEcho(t *testing.T) {
	n := newTestNode(t)
	master, tty := openPTY(t)
	var stdout, stderr bytes.Buffer
	env := map[string]string{"PATCHMESH_URL": n.srv.URL, "PATCHMESH_CONFIG_DIR": n.cfgDir}
	a := &admin{stdin: tty, stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return env[k] }, now: time.Now}

	get, stop := drain(master, tty)
	codec := make(chan int, 1)
	go func() { codec <- a.run(context.Background(), []string{"login"}) }()
	// Type only once echo is off, as a person would after the prompt: the
	// terminal echoes what arrives while echo is on.
	echoOff := false
	for range 1000 {
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err == nil && tio.Lflag&unix.ECHO == 0 {
			echoOff = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !echoOff {
		t.Fatal("login never turned terminal echo off")
	}
	if _, err := io.WriteString(master, nodePassword+"\n"); err != nil {
		t.Fatal(err)
	}
	var code int
	select {
	case code = <-codec:
	case <-time.After(30 * time.Second):
		t.Fatal("login did not finish within 30s")
	}
	stop()
	if code != exitOK {
		t.Fatalf("login on a terminal: exit %d, stderr %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "Password for admin") {
		t.Errorf("prompt = %q, want a password prompt on stderr", stderr.String())
	}
	if strings.Contains(get(), nodePassword) {
		t.Error("the terminal echoed the password")
	}
}
