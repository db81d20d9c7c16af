// natssmoke: a smoke test of a NATS server with the Go client
// (github.com/nats-io/nats.go), run by tests/test_nats.py against the NATS
// door of `fastflow serve` and, as a control, against nats-server.
//
// Build (Debian's nats.go sources, no module download):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o /tmp/natssmoke tests/go/natssmoke.go
//
// Run: natssmoke -url nats://127.0.0.1:4222 [-timeout 5s]
//
// It prints one "ok <step> ..." line per step and "PASS" at the end; on the
// first failure it prints "FAIL <step>: <what happened>" and exits 1.  Every
// wait is bounded by -timeout.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

var (
	url     = flag.String("url", nats.DefaultURL, "server URL")
	timeout = flag.Duration("timeout", 5*time.Second, "bound of every wait")
	step    = "start"
)

func fail(format string, args ...interface{}) {
	fmt.Printf("FAIL %s: %s\n", step, fmt.Sprintf(format, args...))
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func ok(format string, args ...interface{}) {
	fmt.Printf("ok %s %s\n", step, fmt.Sprintf(format, args...))
}

func connect(name string) *nats.Conn {
	nc, err := nats.Connect(*url, nats.Name(name), nats.Timeout(*timeout),
		nats.NoReconnect(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			fmt.Printf("async error on %s: %v\n", name, err)
		}))
	check(err, "connect "+name)
	return nc
}

func next(sub *nats.Subscription, what string) *nats.Msg {
	m, err := sub.NextMsg(*timeout)
	check(err, "waiting for "+what)
	return m
}

func nothingMore(sub *nats.Subscription, what string) {
	if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
		fail("unexpected message on %s: %q %q", what, m.Subject, m.Data)
	}
}

// withoutLineage: h without fastflow's lineage headers (ce-ffhops: a number,
// ce-fftrace: 8-hex-digit hashes, comma-separated), which an event may carry
// through the engine (docs/engine.md, "Feedback loops"); their form is checked.
func withoutLineage(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		switch k {
		case "ce-ffhops":
			if len(v) != 1 || !regexp.MustCompile(`^[0-9]+$`).MatchString(v[0]) {
				fail("bad %s: %q", k, v)
			}
		case "ce-fftrace":
			if len(v) != 1 || !regexp.MustCompile(`^[0-9a-f]{8}(,[0-9a-f]{8})*$`).MatchString(v[0]) {
				fail("bad %s: %q", k, v)
			}
		default:
			out[k] = v
		}
	}
	return out
}

func waitFor(cond func() bool, what string) {
	deadline := time.Now().Add(*timeout)
	for !cond() {
		if time.Now().After(deadline) {
			fail("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func main() {
	flag.Parse()
	defer func() {
		if r := recover(); r != nil {
			fail("panic: %v", r)
		}
	}()

	step = "connect"
	svc := connect("go-smoke-svc")
	cli := connect("go-smoke-cli")
	if !svc.HeadersSupported() || !cli.HeadersSupported() {
		fail("the server does not announce headers support")
	}
	ok("headers=%v max_payload=%d", svc.HeadersSupported(), svc.MaxPayload())

	step = "pubsub"
	sub, err := svc.SubscribeSync("smoke.ps.>")
	check(err, "subscribe")
	check(svc.Flush(), "flush")
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(i)
	}
	check(cli.Publish("smoke.ps.a", []byte("hello")), "publish")
	check(cli.Publish("smoke.ps.b.c", bin), "publish")
	check(cli.Publish("smoke.ps.empty", nil), "publish")
	check(cli.Flush(), "flush")
	m := next(sub, "smoke.ps.a")
	if m.Subject != "smoke.ps.a" || string(m.Data) != "hello" {
		fail("got %q %q", m.Subject, m.Data)
	}
	m = next(sub, "smoke.ps.b.c")
	if m.Subject != "smoke.ps.b.c" || !bytes.Equal(m.Data, bin) {
		fail("got %q with %d bytes", m.Subject, len(m.Data))
	}
	m = next(sub, "smoke.ps.empty")
	if m.Subject != "smoke.ps.empty" || len(m.Data) != 0 || m.Header != nil {
		fail("got %q %q %v", m.Subject, m.Data, m.Header)
	}
	ok("3 messages")

	step = "wildcard"
	wsub, err := svc.SubscribeSync("smoke.*.w")
	check(err, "subscribe")
	check(svc.Flush(), "flush")
	for _, s := range []string{"smoke.x.w", "smoke.x.y.w", "smoke.w", "smoke.y.w"} {
		check(cli.Publish(s, []byte(s)), "publish")
	}
	check(cli.Flush(), "flush")
	for _, want := range []string{"smoke.x.w", "smoke.y.w"} {
		if m = next(wsub, want); m.Subject != want || string(m.Data) != want {
			fail("want %s, got %q %q", want, m.Subject, m.Data)
		}
	}
	nothingMore(wsub, "smoke.*.w")
	ok("smoke.*.w")

	step = "headers"
	hsub, err := svc.SubscribeSync("smoke.hdr")
	check(err, "subscribe")
	check(svc.Flush(), "flush")
	hm := nats.NewMsg("smoke.hdr")
	hm.Header.Set("X-Smoke", "1")
	hm.Header.Add("X-Multi", "a")
	hm.Header.Add("X-Multi", "b")
	hm.Header.Set("lower-case-key", "Value With Spaces")
	hm.Data = []byte("with headers")
	check(cli.PublishMsg(hm), "publish")
	check(cli.Flush(), "flush")
	m = next(hsub, "smoke.hdr")
	if string(m.Data) != "with headers" || !reflect.DeepEqual(m.Header, hm.Header) {
		fail("got %q %v, want %v", m.Data, m.Header, hm.Header)
	}
	ok("X-Smoke=%s X-Multi=%v", m.Header.Get("X-Smoke"), m.Header.Values("X-Multi"))

	step = "cloudevents"
	csub, err := svc.SubscribeSync("smoke.ce")
	check(err, "subscribe")
	check(svc.Flush(), "flush")
	cm := nats.NewMsg("smoke.ce")
	cm.Header.Set("ce-specversion", "1.0")
	cm.Header.Set("ce-id", "go-1")
	cm.Header.Set("ce-source", "/go/smoke")
	cm.Header.Set("ce-type", "go.smoke")
	cm.Header.Set("Content-Type", "text/plain")
	cm.Data = []byte("a cloudevent")
	check(cli.PublishMsg(cm), "publish")
	check(cli.Flush(), "flush")
	m = next(csub, "smoke.ce")
	if string(m.Data) != "a cloudevent" || !reflect.DeepEqual(withoutLineage(m.Header), cm.Header) {
		fail("got %q %v, want %v", m.Data, m.Header, cm.Header)
	}
	ok("ce-id=%s", m.Header.Get("ce-id"))

	step = "queue"
	var qa, qb int64
	_, err = svc.QueueSubscribe("smoke.q", "workers", func(*nats.Msg) { atomic.AddInt64(&qa, 1) })
	check(err, "queue subscribe")
	_, err = cli.QueueSubscribe("smoke.q", "workers", func(*nats.Msg) { atomic.AddInt64(&qb, 1) })
	check(err, "queue subscribe")
	check(svc.Flush(), "flush")
	check(cli.Flush(), "flush")
	for i := 0; i < 40; i++ {
		check(cli.Publish("smoke.q", []byte("q")), "publish")
	}
	check(cli.Flush(), "flush")
	waitFor(func() bool { return atomic.LoadInt64(&qa)+atomic.LoadInt64(&qb) >= 40 }, "40 messages")
	check(svc.Flush(), "flush")
	time.Sleep(50 * time.Millisecond)
	a, b := atomic.LoadInt64(&qa), atomic.LoadInt64(&qb)
	if a+b != 40 || a == 0 || b == 0 {
		fail("the group got %d + %d of 40", a, b)
	}
	ok("40 messages, each once")

	step = "request"
	_, err = svc.Subscribe("smoke.svc", func(m *nats.Msg) {
		if m.Header != nil && m.Header.Get("X-Req") != "" {
			r := nats.NewMsg(m.Reply)
			r.Header.Set("X-Req", m.Header.Get("X-Req"))
			r.Data = bytes.ToUpper(m.Data)
			m.RespondMsg(r)
			return
		}
		m.Respond(bytes.ToUpper(m.Data))
	})
	check(err, "subscribe")
	check(svc.Flush(), "flush")
	for i := 0; i < 5; i++ {
		rep, err := cli.Request("smoke.svc", []byte(fmt.Sprintf("hello %d", i)), *timeout)
		check(err, "request")
		if string(rep.Data) != fmt.Sprintf("HELLO %d", i) {
			fail("reply %q", rep.Data)
		}
	}
	rm := nats.NewMsg("smoke.svc")
	rm.Header.Set("X-Req", "r-1")
	rm.Data = []byte("with header")
	rep, err := cli.RequestMsg(rm, *timeout)
	check(err, "request with headers")
	if string(rep.Data) != "WITH HEADER" || rep.Header.Get("X-Req") != "r-1" {
		fail("reply %q %v", rep.Data, rep.Header)
	}
	ok("6 replies")

	step = "noresponders"
	t0 := time.Now()
	_, err = cli.Request("smoke.nobody", []byte("?"), *timeout)
	if err != nats.ErrNoResponders {
		fail("want nats.ErrNoResponders, got %v after %v", err, time.Since(t0))
	}
	if time.Since(t0) > *timeout/2 {
		fail("no responders took %v", time.Since(t0))
	}
	ok("at once")

	step = "automax"
	msub, err := svc.SubscribeSync("smoke.max")
	check(err, "subscribe")
	check(msub.AutoUnsubscribe(3), "auto unsubscribe")
	check(svc.Flush(), "flush")
	for i := 0; i < 10; i++ {
		check(cli.Publish("smoke.max", []byte{byte('0' + i)}), "publish")
	}
	check(cli.Flush(), "flush")
	check(svc.Flush(), "flush")
	for i := 0; i < 3; i++ {
		m = next(msub, "smoke.max")
		if string(m.Data) != string([]byte{byte('0' + i)}) {
			fail("got %q", m.Data)
		}
	}
	if m, err := msub.NextMsg(100 * time.Millisecond); err == nil {
		fail("a 4th message: %q", m.Data)
	}
	ok("3 of 10")

	step = "drain"
	check(svc.Drain(), "drain svc")
	check(cli.Drain(), "drain cli")
	waitFor(func() bool { return svc.IsClosed() && cli.IsClosed() }, "the drained connections to close")
	ok("closed")
	fmt.Println("PASS")
}
