// natsbench: the Go side of benchmarks/compare_broker.py (and of
// compare_nats.py and compare_cluster.py), a small NATS client built on
// github.com/nats-io/nats.go.  One mode per process:
//
//	pub    publish -n messages of -size bytes on -subject (unpaced, or paced:
//	       one message 1/-rate seconds after the previous one, with a
//	       timestamp of the -clock (ns, little-endian) and a sequence number
//	       in its first 16 bytes); with -ack, stay at most -window
//	       messages ahead of the slowest of -subs subscribers (they report their
//	       counts on <ack>.<i>)
//	sub    receive -n messages on -subject; -lat: record the one-way latency of
//	       each (now on the -clock - the timestamp in the payload); -ack: report
//	       the count on <ack>.<-id> every -ack-every messages
//	req    -n sequential requests (after -warmup more) of -size bytes; records
//	       each round trip
//	reply  answer requests on -subject with their own payload, until -n were
//	       answered
//	jspub  publish -n messages of -size bytes on -subject into the JetStream
//	       stream -stream (created when missing: that subject, -replicas
//	       replicas, file storage), after -warmup more, each acknowledged by
//	       the stream: one at a time (js.Publish, each round trip recorded) or,
//	       with -async W, at most W unacknowledged (js.PublishAsync)
//
// sub and reply print {"ready": true} once their subscription is known to the
// server; every mode ends by printing one JSON object with its results.
// Every wait is bounded by -timeout.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
)

var (
	mode     = flag.String("mode", "", "pub, sub, req or reply")
	url      = flag.String("url", nats.DefaultURL, "server URL")
	subject  = flag.String("subject", "bench", "subject")
	n        = flag.Int("n", 100000, "messages (pub, sub), requests (req) or replies (reply)")
	size     = flag.Int("size", 16, "payload bytes")
	rate     = flag.Float64("rate", 0, "pub: messages/s (0: unpaced); paced messages carry a timestamp")
	lat      = flag.Bool("lat", false, "sub: record one-way latencies from the timestamps")
	warmup   = flag.Int("warmup", 0, "req: requests before the recorded ones; sub -lat: messages not recorded")
	ack      = flag.String("ack", "", "flow-control subject prefix (pub and sub; empty: none)")
	ackEvery = flag.Int("ack-every", 10000, "sub: report the count every this many messages")
	window   = flag.Int("window", 100000, "pub: most messages ahead of the slowest subscriber")
	subs     = flag.Int("subs", 1, "pub: subscribers reporting on <ack>.*")
	id       = flag.Int("id", 0, "sub: this subscriber's number (its ack subject)")
	timeout  = flag.Duration("timeout", 60*time.Second, "bound of every wait")
	clock    = flag.String("clock", "realtime", "pub, sub -lat: the timestamps' clock, realtime or monotonic")
	stream   = flag.String("stream", "BENCH", "jspub: the JetStream stream")
	replicas = flag.Int("replicas", 1, "jspub: the stream's replicas when it is created")
	async    = flag.Int("async", 0, "jspub: most unacknowledged publishes (0: js.Publish, one at a time)")
)

// now reads the -clock in ns.  CLOCK_MONOTONIC is system-wide on Linux (the
// clock Python's time.monotonic_ns and perf_counter_ns read), so a stamp taken
// in one process can be compared in another; Go's own monotonic reading is
// relative to its process, hence the system call (well under a microsecond).
var now = func() int64 { return time.Now().UnixNano() }

func monotonicNow() int64 {
	var ts syscall.Timespec
	const clockMonotonic = 1 // CLOCK_MONOTONIC in <linux/time.h>
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

func fail(format string, args ...interface{}) {
	emit(map[string]interface{}{"error": fmt.Sprintf(format, args...)})
	os.Exit(1)
}

func emit(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Stdout.Write(append(b, '\n'))
}

func connect() *nats.Conn {
	nc, err := nats.Connect(*url, nats.Name("natsbench-"+*mode), nats.Timeout(*timeout),
		nats.NoReconnect(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			fmt.Fprintln(os.Stderr, "natsbench:", err)
		}))
	if err != nil {
		fail("connect %s: %v", *url, err)
	}
	return nc
}

// cpuSeconds is this process's user + system CPU time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// minorFaults is this process's minor page faults so far.
func minorFaults() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Minflt
}

func base() map[string]interface{} {
	return map[string]interface{}{
		"mode": *mode, "client": "nats.go " + nats.Version, "go": runtime.Version(),
		"n": *n, "size": *size,
	}
}

func main() {
	flag.Parse()
	if *size < 16 && (*rate > 0 || *lat) {
		fail("timestamped messages need -size >= 16")
	}
	switch *clock {
	case "realtime":
	case "monotonic":
		now = monotonicNow
	default:
		fail("unknown -clock %q (realtime or monotonic)", *clock)
	}
	switch *mode {
	case "pub":
		pub()
	case "sub":
		sub()
	case "req":
		req()
	case "reply":
		reply()
	case "jspub":
		jspub()
	default:
		fail("unknown -mode %q", *mode)
	}
}

// pub ------------------------------------------------------------------------

func pub() {
	nc := connect()
	defer nc.Close()
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	acked := make([]int64, *subs)
	if *ack != "" {
		_, err := nc.Subscribe(*ack+".*", func(m *nats.Msg) {
			var i int
			if _, err := fmt.Sscanf(m.Subject[len(*ack)+1:], "%d", &i); err != nil || i < 0 || i >= len(acked) {
				return
			}
			c, err := strconv.ParseInt(string(m.Data), 10, 64)
			if err != nil {
				return
			}
			mu.Lock()
			if c > acked[i] {
				acked[i] = c
			}
			mu.Unlock()
			cond.Broadcast()
		})
		if err != nil {
			fail("subscribe %s.*: %v", *ack, err)
		}
		if err := nc.FlushTimeout(*timeout); err != nil {
			fail("flush: %v", err)
		}
	}
	minAcked := func() int64 {
		m := acked[0]
		for _, c := range acked[1:] {
			if c < m {
				m = c
			}
		}
		return m
	}
	// waitWindow blocks until message k may be sent; false on timeout
	deadline := time.Now().Add(*timeout)
	waits := 0
	waitWindow := func(k int64) bool {
		mu.Lock()
		defer mu.Unlock()
		if k-minAcked() <= int64(*window) {
			return true
		}
		waits++
		stop := time.AfterFunc(time.Until(deadline), func() {
			mu.Lock()
			deadline = time.Time{}
			mu.Unlock()
			cond.Broadcast()
		})
		defer stop.Stop()
		for k-minAcked() > int64(*window) {
			if deadline.IsZero() || time.Now().After(deadline) {
				return false
			}
			cond.Wait()
		}
		return true
	}
	data := make([]byte, *size)
	check := *window / 8
	if check < 1 {
		check = 1
	}
	var interval time.Duration
	if *rate > 0 {
		interval = time.Duration(float64(time.Second) / *rate)
	}
	var prev time.Time
	cpu0, flt0 := cpuSeconds(), minorFaults()
	start := time.Now().UnixNano()
	timedOut := false
	sent := 0
	for i := 0; i < *n; i++ {
		if *ack != "" && i%check == 0 && !waitWindow(int64(i)+int64(check)) {
			timedOut = true
			break
		}
		if interval > 0 {
			// one message per interval after the previous one (no catch-up bursts)
			if i > 0 {
				if d := time.Until(prev.Add(interval)); d > 0 {
					time.Sleep(d)
				}
			}
			prev = time.Now()
			binary.LittleEndian.PutUint64(data[0:8], uint64(now()))
			binary.LittleEndian.PutUint64(data[8:16], uint64(i))
		}
		if err := nc.Publish(*subject, data); err != nil {
			fail("publish: %v", err)
		}
		sent++
	}
	if err := nc.FlushTimeout(*timeout); err != nil {
		fail("flush: %v", err)
	}
	end := time.Now().UnixNano()
	out := base()
	out["sent"] = sent
	out["start_ns"] = start
	out["end_ns"] = end
	out["seconds"] = float64(end-start) / 1e9
	out["window_waits"] = waits
	out["cpu_s"] = cpuSeconds() - cpu0
	out["cpu_total_s"] = cpuSeconds()
	out["minflt"] = minorFaults() - flt0
	out["timed_out"] = timedOut
	emit(out)
}

// sub ------------------------------------------------------------------------

func sub() {
	nc := connect()
	defer nc.Close()
	var (
		mu       sync.Mutex // the callback runs on one goroutine; the lock is for the final read
		count    int64
		first    int64
		last     int64
		lats     []int64
		maxSeq   int64 = -1
		outOrder int64
	)
	if *lat {
		lats = make([]int64, 0, *n)
	}
	done := make(chan struct{})
	ackSubj := fmt.Sprintf("%s.%d", *ack, *id)
	every := int64(*ackEvery)
	_, err := nc.Subscribe(*subject, func(m *nats.Msg) {
		t := now()
		mu.Lock()
		defer mu.Unlock()
		c := count + 1
		count = c
		if c == 1 {
			first = t
		}
		last = t
		if *lat && len(m.Data) >= 16 {
			ts := int64(binary.LittleEndian.Uint64(m.Data[0:8]))
			seq := int64(binary.LittleEndian.Uint64(m.Data[8:16]))
			if seq <= maxSeq {
				outOrder++
			}
			maxSeq = seq
			if seq >= int64(*warmup) {
				lats = append(lats, t-ts)
			}
		}
		if *ack != "" && (c%every == 0 || c == int64(*n)) {
			nc.Publish(ackSubj, []byte(strconv.FormatInt(c, 10)))
		}
		if c == int64(*n) {
			nc.Flush()
			close(done)
		}
	})
	if err != nil {
		fail("subscribe: %v", err)
	}
	if err := nc.FlushTimeout(*timeout); err != nil {
		fail("flush: %v", err)
	}
	cpu0, flt0 := cpuSeconds(), minorFaults()
	emit(map[string]interface{}{"ready": true})
	timedOut := false
	select {
	case <-done:
	case <-time.After(*timeout):
		timedOut = true
	}
	cpu, flt := cpuSeconds()-cpu0, minorFaults()-flt0
	mu.Lock()
	defer mu.Unlock()
	out := base()
	out["received"] = count
	out["cpu_s"] = cpu
	out["minflt"] = flt
	out["first_ns"] = first
	out["last_ns"] = last
	out["timed_out"] = timedOut
	if *lat {
		out["latencies_ns"] = lats
		out["out_of_order"] = outOrder
	}
	emit(out)
}

// req / reply ----------------------------------------------------------------

func req() {
	nc := connect()
	defer nc.Close()
	data := make([]byte, *size)
	rtts := make([]int64, 0, *n)
	cpu0 := cpuSeconds()
	for i := 0; i < *warmup+*n; i++ {
		t := time.Now()
		m, err := nc.Request(*subject, data, *timeout)
		d := time.Since(t)
		if err != nil {
			fail("request %d: %v", i, err)
		}
		if len(m.Data) != len(data) {
			fail("reply %d: %d bytes for %d", i, len(m.Data), len(data))
		}
		if i >= *warmup {
			rtts = append(rtts, d.Nanoseconds())
		}
	}
	out := base()
	out["rtts_ns"] = rtts
	out["warmup"] = *warmup
	out["cpu_s"] = cpuSeconds() - cpu0
	emit(out)
}

func reply() {
	nc := connect()
	defer nc.Close()
	var count int64
	done := make(chan struct{})
	_, err := nc.Subscribe(*subject, func(m *nats.Msg) {
		m.Respond(m.Data)
		if atomic.AddInt64(&count, 1) == int64(*n) {
			nc.Flush()
			close(done)
		}
	})
	if err != nil {
		fail("subscribe: %v", err)
	}
	if err := nc.FlushTimeout(*timeout); err != nil {
		fail("flush: %v", err)
	}
	cpu0 := cpuSeconds()
	emit(map[string]interface{}{"ready": true})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	timedOut := false
	select {
	case <-done:
	case <-sig:
	case <-time.After(*timeout):
		timedOut = true
	}
	out := base()
	out["answered"] = atomic.LoadInt64(&count)
	out["cpu_s"] = cpuSeconds() - cpu0
	out["timed_out"] = timedOut
	emit(out)
}

// jspub ----------------------------------------------------------------------

// ensureStream creates -stream when it does not exist and waits until it has
// a leader; a cluster that has just started answers "temporarily unavailable"
// until its meta leader is elected, so errors are retried until the deadline.
func ensureStream(js nats.JetStreamContext, deadline time.Time) *nats.StreamInfo {
	var last error
	for time.Now().Before(deadline) {
		info, err := js.StreamInfo(*stream)
		if err == nats.ErrStreamNotFound {
			info, err = js.AddStream(&nats.StreamConfig{
				Name: *stream, Subjects: []string{*subject}, Replicas: *replicas,
				Storage: nats.FileStorage,
			})
		}
		if err == nil && (info.Cluster == nil || info.Cluster.Leader != "" || *replicas == 1) {
			return info
		}
		if err != nil {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	fail("stream %s not ready by the deadline: %v", *stream, last)
	return nil
}

func jspub() {
	nc := connect()
	defer nc.Close()
	deadline := time.Now().Add(*timeout)
	var jopts []nats.JSOpt
	if *async > 0 {
		jopts = append(jopts, nats.PublishAsyncMaxPending(*async))
	}
	js, err := nc.JetStream(jopts...)
	if err != nil {
		fail("jetstream: %v", err)
	}
	info := ensureStream(js, deadline)
	data := make([]byte, *size)
	// the warm-up: until the stream takes a message (its leader may be new),
	// then -warmup more
	for {
		if _, err := js.Publish(*subject, data); err == nil {
			break
		} else if time.Now().After(deadline) {
			fail("warm-up publish: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < *warmup; i++ {
		if _, err := js.Publish(*subject, data); err != nil {
			fail("warm-up publish %d: %v", i, err)
		}
	}
	var rtts []int64
	stalls, failed := 0, 0
	cpu0 := cpuSeconds()
	start := time.Now().UnixNano()
	if *async == 0 {
		rtts = make([]int64, 0, *n)
		for i := 0; i < *n; i++ {
			t := time.Now()
			if _, err := js.Publish(*subject, data); err != nil {
				fail("publish %d: %v", i, err)
			}
			rtts = append(rtts, time.Since(t).Nanoseconds())
		}
	} else {
		futures := make([]nats.PubAckFuture, 0, *n)
		for i := 0; i < *n; {
			f, err := js.PublishAsync(*subject, data)
			if err != nil { // stalled: -async unacknowledged for 200 ms; try again
				stalls++
				if time.Now().After(deadline) {
					fail("publish %d: %v", i, err)
				}
				continue
			}
			futures = append(futures, f)
			i++
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Until(deadline)):
			fail("%d publishes unacknowledged at the deadline", js.PublishAsyncPending())
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case <-f.Err():
				failed++
			}
		}
	}
	end := time.Now().UnixNano()
	cpu := cpuSeconds() - cpu0
	out := base()
	if info2, err := js.StreamInfo(*stream); err == nil {
		info = info2
	}
	out["stream_msgs"] = info.State.Msgs
	if info.Cluster != nil {
		out["stream_leader"] = info.Cluster.Leader
		replicas := []string{}
		for _, r := range info.Cluster.Replicas {
			replicas = append(replicas, r.Name)
		}
		out["stream_replicas"] = replicas
	}
	out["sent"] = *n
	out["failed"] = failed
	out["stalls"] = stalls
	out["start_ns"] = start
	out["end_ns"] = end
	out["seconds"] = float64(end-start) / 1e9
	out["cpu_s"] = cpu
	out["cpu_total_s"] = cpuSeconds()
	if rtts != nil {
		out["rtts_ns"] = rtts
	}
	emit(out)
}
