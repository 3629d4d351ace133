// Command loadrun is the load-run harness of `make load-receiver` (docs/BENCHMARKS.md); it
// is not part of the shipped binary. Subcommands:
//
//	body   write a request body: MiiTel's seed sample, its transcript grown to -size
//	       bytes, its call id and detail ids replaced by a marker that gen and wrk.lua
//	       splice per request
//	naive  serve the naive baseline receiver: gin, bind the JSON into a 2-field struct,
//	       one asynq Client.Enqueue with TaskID, no auth
//	http   serve the HTTP ceiling: gin reads the body and answers 200, no decode, no Redis
//	floor  the bare-enqueue floor: asynq Client.Enqueue in a loop (closed, -c workers) or
//	       at -rate (open loop), no HTTP
//	gen    the open-loop (or -c closed-loop) HTTP generator
//	check  prove that every call id a generator got a 2xx for is queued in Redis
//
// gen paces open loop by the clock: request i is due at start + i/rate and is sent from
// its own goroutine at that time whatever earlier requests are doing, and its latency is
// measured from when it was due, so a stalled receiver shows as latency instead of
// silently lowering the rate (coordinated omission). It reports the rate it achieved.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/miitel-crm-sync/miitel-crm-sync/examples"
	naivepkg "github.com/miitel-crm-sync/miitel-crm-sync/receiver/internal/naive"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// marker is the call id in a generated body, and the start of each detail id (marker-D1,
// ...); each request replaces every occurrence with its unique id. Real traffic gives every
// call its own detail ids too: a body whose detail id repeated across calls would make every
// request update one call status record, a hot spot no real sender produces.
const marker = "LOADRUN-CALL-ID"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadrun body|naive|http|floor|gen|check [flags]")
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{"body": body, "naive": naive, "http": httpOnly, "floor": floor, "gen": gen, "check": check}
	f, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "loadrun: unknown subcommand %q\n", os.Args[1])
		os.Exit(2)
	}
	if err := f(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "loadrun:", err)
		os.Exit(1)
	}
}

func body(args []string) error {
	fs := flag.NewFlagSet("body", flag.ExitOnError)
	size := fs.Int("size", 0, "grow the transcript until the body is about this many bytes (0: the sample as is)")
	out := fs.String("o", "", "output file")
	_ = fs.Parse(args)
	seed, err := examples.Payload("call_analysis_completed/seed_sample.json")
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(seed, &m); err != nil {
		return err
	}
	call := m["call"].(map[string]any)
	call["id"] = marker
	for i, d := range call["details"].([]any) {
		d.(map[string]any)["id"] = marker + "-D" + strconv.Itoa(i+1)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if *size > len(b) {
		d := call["details"].([]any)[0].(map[string]any)
		sr := d["speech_recognition"].(map[string]any)
		raw := sr["raw"].(string)
		line := "0:01 (Customer) はい、お電話ありがとうございます。ご用件をお伺いします。\n"
		var sb strings.Builder
		sb.WriteString(raw)
		grown := 0 // what the lines add to the JSON: each \n is written as two bytes
		for len(b)+grown+len(line)+1 <= *size {
			sb.WriteString(line)
			grown += len(line) + 1
		}
		sr["raw"] = sb.String()
		if b, err = json.Marshal(m); err != nil {
			return err
		}
	}
	return os.WriteFile(*out, b, 0o644)
}

// naive is the baseline: what a receiver that only queues the body costs.
func naive(args []string) error {
	fs := flag.NewFlagSet("naive", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	addr := fs.String("redis", "", "redis host:port")
	queue := fs.String("queue", "miitel", "asynq queue")
	_ = fs.Parse(args)
	rdb := redis.NewClient(&redis.Options{Addr: *addr})
	client := asynq.NewClientFromRedisClient(rdb)
	return serve(*listen, naivepkg.Handler(client, *queue))
}

// httpOnly is the HTTP ceiling: gin reads the body and answers the naive receiver's 200,
// with no decode and no Redis. What the generator, the kernel's loopback and net/http cost
// together on this machine; every receiver pays it on top of its own work.
func httpOnly(args []string) error {
	fs := flag.NewFlagSet("http", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	_ = fs.Parse(args)
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.POST("/*path", func(c *gin.Context) {
		if _, err := c.GetRawData(); err != nil {
			c.AbortWithStatus(http.StatusBadRequest)
			return
		}
		c.JSON(http.StatusOK, gin.H{"status": "accepted", "call_id": "-"})
	})
	return serve(*listen, e)
}

// serve serves h on listen until interrupted, printing the address it listens on.
func serve(listen string, h http.Handler) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, os.Kill)
	defer stop()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// result is one run's figures, printed as one JSON line.
type result struct {
	Sent     int            `json:"sent"`
	OK       int            `json:"ok"`
	Status   map[string]int `json:"status"`
	Seconds  float64        `json:"seconds"`
	ReqPerS  float64        `json:"req_per_s"` // 2xx per second
	SentPerS float64        `json:"sent_per_s"`
	P50ms    float64        `json:"p50_ms"`
	P99ms    float64        `json:"p99_ms"`
	MaxMs    float64        `json:"max_ms"`
}

type recorder struct {
	mu     sync.Mutex
	lat    []time.Duration
	status map[string]int
	ok     int
	ids    *bufio.Writer
}

func (r *recorder) add(code string, d time.Duration, ok bool, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lat = append(r.lat, d)
	r.status[code]++
	if ok {
		r.ok++
		if r.ids != nil {
			r.ids.WriteString(id + "\n")
		}
	}
}

func (r *recorder) result(elapsed time.Duration) result {
	slices.Sort(r.lat)
	pct := func(p float64) float64 {
		if len(r.lat) == 0 {
			return 0
		}
		i := int(p*float64(len(r.lat))+0.999999) - 1
		return float64(r.lat[max(0, min(i, len(r.lat)-1))].Microseconds()) / 1000
	}
	res := result{Sent: len(r.lat), OK: r.ok, Status: r.status, Seconds: elapsed.Seconds(),
		ReqPerS: float64(r.ok) / elapsed.Seconds(), SentPerS: float64(len(r.lat)) / elapsed.Seconds(),
		P50ms: pct(0.50), P99ms: pct(0.99)}
	if len(r.lat) > 0 {
		res.MaxMs = float64(r.lat[len(r.lat)-1].Microseconds()) / 1000
	}
	return res
}

// run drives fn open loop at rate (due times by the clock, one goroutine per request) or
// closed loop with conc workers, for d.
func run(rate float64, conc int, d time.Duration, fn func(i int, due time.Time)) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	if rate > 0 {
		n := int(rate * d.Seconds())
		for i := range n {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if w := time.Until(due); w > 0 {
				time.Sleep(w) // pacing the schedule, not synchronising
			}
			wg.Add(1)
			go func() { defer wg.Done(); fn(i, due) }()
		}
	} else {
		var next atomic.Int64
		end := start.Add(d)
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					fn(int(next.Add(1)), time.Now())
				}
			}()
		}
	}
	wg.Wait()
	return time.Since(start)
}

func floor(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ExitOnError)
	addr := fs.String("redis", "", "redis host:port")
	queue := fs.String("queue", "miitel-floor", "asynq queue")
	rate := fs.Float64("rate", 0, "open loop at this rate (0: closed loop)")
	conc := fs.Int("c", 32, "closed-loop workers")
	d := fs.Duration("duration", 10*time.Second, "how long")
	file := fs.String("body", "", "payload file")
	_ = fs.Parse(args)
	payload, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: *addr, PoolSize: max(*conc, 64)})
	client := asynq.NewClientFromRedisClient(rdb)
	run_ := strconv.FormatInt(time.Now().UnixNano(), 36)
	rec := &recorder{status: map[string]int{}}
	elapsed := run(*rate, *conc, *d, func(i int, due time.Time) {
		t := asynq.NewTask(tasks.TypeCallEvent, payload)
		_, err := client.Enqueue(t, asynq.TaskID(run_+"-"+strconv.Itoa(i)), asynq.Queue(*queue), asynq.MaxRetry(26), asynq.Timeout(2*time.Minute))
		code := "enqueued"
		if err != nil {
			code = "error"
		}
		rec.add(code, time.Since(due), err == nil, "")
	})
	return json.NewEncoder(os.Stdout).Encode(rec.result(elapsed))
}

func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	url := fs.String("url", "", "webhook URL")
	rate := fs.Float64("rate", 0, "open loop at this rate (0: closed loop)")
	conc := fs.Int("c", 32, "closed-loop connections")
	d := fs.Duration("duration", 10*time.Second, "how long")
	file := fs.String("body", "", "body file with the call-id marker")
	hdr := fs.String("header", "", "one extra header K: V")
	idsOut := fs.String("ids", "", "write the call id of every 2xx here")
	_ = fs.Parse(args)
	b, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	parts := bytes.Split(b, []byte(marker))
	if len(parts) < 2 {
		return errors.New("body has no call-id marker")
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 4096, MaxConnsPerHost: 0, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	rec := &recorder{status: map[string]int{}}
	if *idsOut != "" {
		f, err := os.Create(*idsOut)
		if err != nil {
			return err
		}
		defer f.Close()
		rec.ids = bufio.NewWriter(f)
		defer rec.ids.Flush()
	}
	hk, hv, _ := strings.Cut(*hdr, ":")
	runID := "g" + strconv.FormatInt(time.Now().UnixNano(), 36)
	elapsed := run(*rate, *conc, *d, func(i int, due time.Time) {
		id := runID + "-" + strconv.Itoa(i)
		body := bytes.Join(parts, []byte(id))
		req, _ := http.NewRequest(http.MethodPost, *url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("User-Agent", "MiiTel-Webhook/v1")
		if hk != "" {
			req.Header.Set(strings.TrimSpace(hk), strings.TrimSpace(hv))
		}
		resp, err := client.Do(req)
		if err != nil {
			rec.add("error", time.Since(due), false, "")
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		rec.add(strconv.Itoa(resp.StatusCode), time.Since(due), resp.StatusCode/100 == 2, id)
	})
	return json.NewEncoder(os.Stdout).Encode(rec.result(elapsed))
}

// check reads every pending task of the queue and proves each listed call id is there.
func check(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	addr := fs.String("redis", "", "redis host:port")
	queue := fs.String("queue", "miitel", "asynq queue")
	_ = fs.Parse(args)
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: *addr})
	ids, err := rdb.LRange(ctx, "asynq:{"+*queue+"}:pending", 0, -1).Result()
	if err != nil {
		return err
	}
	queued := map[string]bool{}
	for chunk := range slices.Chunk(ids, 500) {
		pipe := rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(chunk))
		for i, id := range chunk {
			cmds[i] = pipe.HGet(ctx, "asynq:{"+*queue+"}:t:"+id, "msg")
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		for _, c := range cmds {
			queued[callID(payloadOf([]byte(c.Val())))] = true
		}
	}
	want, missing := 0, 0
	for _, f := range fs.Args() {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			if id := strings.TrimSpace(sc.Text()); id != "" {
				want++
				if !queued[id] {
					missing++
				}
			}
		}
		fh.Close()
	}
	fmt.Printf(`{"acknowledged":%d,"missing":%d,"tasks":%d}`+"\n", want, missing, len(ids))
	if missing > 0 {
		return fmt.Errorf("%d acknowledged call ids are not in Redis", missing)
	}
	return nil
}

func payloadOf(msg []byte) []byte {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil
		}
		msg = msg[n:]
		m := protowire.ConsumeFieldValue(num, typ, msg)
		if m < 0 {
			return nil
		}
		if num == 2 {
			v, _ := protowire.ConsumeBytes(msg)
			return v
		}
		msg = msg[m:]
	}
	return nil
}

// callID reads the call id of a task payload: an event (the receiver) or a body (naive).
func callID(p []byte) string {
	var v struct {
		CallID string `json:"call_id"`
		Call   struct {
			ID string `json:"id"`
		} `json:"call"`
	}
	_ = json.Unmarshal(p, &v)
	if v.CallID != "" {
		return v.CallID
	}
	return v.Call.ID
}
