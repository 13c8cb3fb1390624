package mmtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/transit"
)

// A test's NATS cluster.
//
// NewCluster starts n nats-server nodes, each a process of its own (so
// that a test can kill -9 one): the test binary, started with
// envNATSNode set, runs one node of the pinned nats-server module from a
// config file (natsNodeMain). The nodes listen on free loopback ports,
// are routed to each other as one cluster with JetStream (each with its
// own store directory) and let clients in with one token. Every node's
// command line names its config file under the cluster's directory, so
// the clean-up finds and kills the nodes the way an Env finds its
// processes (see procs.go), also a node a test restarted.

// envNATSNode is set in the environment of a NATS node process the
// harness starts: the test binary then runs the node (natsNodeMain).
const envNATSNode = "MULTIMODULE_MMTEST_NATS_NODE"

// ClusterReplicas is the replica count a Box's host scope gets by default
// on a cluster of at least that many nodes.
const ClusterReplicas = 3

// clusterBoxBytes is the storage of a box's host scope on the test
// cluster (--bus-max-bytes): small, the nodes share one disk.
const clusterBoxBytes = "64MiB"

// Cluster is a NATS cluster of separate nats-server processes on loopback
// ports, JetStream clustered, cleaned up (every node killed, every
// directory removed) when the test ends.
type Cluster struct {
	T     testing.TB
	Dir   string
	Token string // the clients' token (in URLs)
	Nodes []*Node
	// Replicas is the --bus-replicas every Box gets: ClusterReplicas,
	// or the number of nodes when fewer.
	Replicas int

	tracker *procTracker
}

// Node is one nats-server process of a Cluster.
type Node struct {
	Name        string
	Port        int // client port
	ClusterPort int // route port
	HTTPPort    int // monitoring port (/healthz)
	Config      string
	Dir         string

	c      *Cluster
	mu     sync.Mutex
	proc   *Proc
	killed bool // by Kill, until Start
}

// NewCluster starts an n-node NATS cluster and waits until it is ready: every
// node up, routed, and JetStream's meta leader elected (each node's
// /healthz says ok and JetStream answers through it).
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("mmtest: NewCluster: %d nodes", n)
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{T: t, Dir: filepath.Join(t.TempDir(), "natscluster"), Token: hex.EncodeToString(tok), Replicas: min(n, ClusterReplicas)}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	c.tracker = newProcTracker(c.Dir)
	t.Cleanup(c.cleanup)
	for i := range n {
		nd := &Node{Name: fmt.Sprintf("n%d", i+1), c: c}
		nd.Dir = filepath.Join(c.Dir, nd.Name)
		nd.Config = filepath.Join(nd.Dir, "node.conf")
		nd.Port, nd.ClusterPort, nd.HTTPPort = freePort(t), freePort(t), freePort(t)
		c.Nodes = append(c.Nodes, nd)
	}
	for _, nd := range c.Nodes {
		if err := os.MkdirAll(nd.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(nd.Config, []byte(c.nodeConfig(nd)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range c.Nodes {
		nd.Start()
	}
	c.WaitReady(90 * time.Second)
	return c
}

// nodeConfig is nd's nats-server config file.
func (c *Cluster) nodeConfig(nd *Node) string {
	var routes []string
	for _, o := range c.Nodes {
		if o != nd {
			routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats-route://127.0.0.1:%d", o.ClusterPort)))
		}
	}
	return fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
http: "127.0.0.1:%d"
max_payload: 8MB
log_file: %q
authorization { token: %q }
jetstream {
  store_dir: %q
  max_file_store: 4GB
  max_memory_store: 64MB
}
cluster {
  name: mmtest
  listen: "127.0.0.1:%d"
  routes: [%s]
}
`, nd.Name, nd.Port, nd.HTTPPort, filepath.Join(nd.Dir, "node.log"), c.Token, filepath.Join(nd.Dir, "jetstream"), nd.ClusterPort, strings.Join(routes, ", "))
}

// freePort returns a loopback TCP port free at the time of the call,
// below the kernel's ephemeral range: a port from that range (what a
// listen on port 0 gets) is also handed out as the source port of any
// process' outgoing connection, and one taken that way between this
// call and the node's start — or while a killed node is down, since a
// node starts again on its ports — makes the node fail with "address
// already in use". Below the range only another explicit choice like
// this one can take it.
func freePort(t testing.TB) int {
	t.Helper()
	low := ephemeralLow()
	const from = 10000
	for range 200 {
		port := from + mrand.IntN(low-from)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatalf("mmtest: no free loopback port in %d-%d after 200 tries", from, low-1)
	return 0
}

// ephemeralLow is the first port of the kernel's ephemeral range
// (32768 when it cannot be read, Linux's default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low <= 10000+1000 {
		return 32768
	}
	return low
}

// URL is the client URL of nd, with the token.
func (nd *Node) URL() string {
	return fmt.Sprintf("nats://%s@127.0.0.1:%d", nd.c.Token, nd.Port)
}

// URLs is the comma-separated client URLs of every node (for --nats).
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, nd := range c.Nodes {
		urls[i] = nd.URL()
	}
	return strings.Join(urls, ",")
}

// Start starts nd's process (again, after Kill: same ports, same store).
func (nd *Node) Start() {
	t := nd.c.T
	t.Helper()
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.proc != nil && !nd.proc.Exited() {
		t.Fatalf("mmtest: NATS node %s runs already (pid %d)", nd.Name, nd.proc.PID())
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("mmtest: os.Executable: %v", err)
	}
	cmd := exec.Command(exe, nd.Config)
	cmd.Env = append(os.Environ(), envNATSNode+"=1")
	p := &Proc{Cmd: cmd, Stdout: &Buffer{}, Stderr: &Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("mmtest: start NATS node %s: %v", nd.Name, err)
	}
	nd.c.tracker.started(cmd.Process.Pid)
	go func() { p.err = cmd.Wait(); close(p.done) }()
	nd.proc, nd.killed = p, false
}

// Kill kills nd's process with SIGKILL and waits for it to end.
func (nd *Node) Kill() {
	nd.mu.Lock()
	p := nd.proc
	nd.killed = true
	nd.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// Proc is nd's current process.
func (nd *Node) Proc() *Proc {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.proc
}

// Running reports whether nd's process runs.
func (nd *Node) Running() bool {
	p := nd.Proc()
	return p != nil && !p.Exited()
}

// WaitReady waits until every running node is healthy (JetStream
// current, a meta leader known) and JetStream answers through each; a
// node that ended without Kill fails the test.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.T.Helper()
	Eventually(c.T, timeout, func() error {
		for _, nd := range c.Nodes {
			nd.mu.Lock()
			p, killed := nd.proc, nd.killed
			nd.mu.Unlock()
			if killed {
				continue
			}
			if p.Exited() {
				log, _ := os.ReadFile(filepath.Join(nd.Dir, "node.log"))
				return fmt.Errorf("NATS node %s exited (%v); log:\n%s%s", nd.Name, p.err, log, p.Stderr)
			}
			if err := nd.healthy(); err != nil {
				return err
			}
		}
		return c.metaCurrent()
	})
}

// metaCurrent returns nil once the JetStream meta group has a leader that
// sees every other running node as a current member: before that, the
// cluster may refuse to place a replicated stream ("no suitable peers
// for placement, peer offline"). Only the leader's view counts (a
// follower does not track the others).
func (c *Cluster) metaCurrent() error {
	running := map[string]bool{}
	for _, nd := range c.Nodes {
		if nd.Running() {
			running[nd.Name] = true
		}
	}
	for _, nd := range c.Nodes {
		if !running[nd.Name] {
			continue
		}
		jsz, err := nd.meta()
		if err != nil {
			return err
		}
		if jsz.Meta.Leader != nd.Name {
			continue
		}
		current := map[string]bool{nd.Name: true}
		for _, r := range jsz.Meta.Replicas {
			if r.Current {
				current[r.Name] = true
			}
		}
		for name := range running {
			if !current[name] {
				return fmt.Errorf("the meta leader %s does not see %s as a current member yet", nd.Name, name)
			}
		}
		return nil
	}
	return errors.New("no running NATS node is the JetStream meta leader yet")
}

// nodeJSZ is what a node's /jsz says of the JetStream meta group.
type nodeJSZ struct {
	Meta struct {
		Leader   string `json:"leader"`
		Replicas []struct {
			Name    string `json:"name"`
			Current bool   `json:"current"`
		} `json:"replicas"`
	} `json:"meta_cluster"`
}

// meta asks nd's /jsz about the meta group.
func (nd *Node) meta() (*nodeJSZ, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", nd.HTTPPort))
	if err != nil {
		return nil, fmt.Errorf("NATS node %s: /jsz: %w", nd.Name, err)
	}
	defer resp.Body.Close()
	var jsz nodeJSZ
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
		return nil, fmt.Errorf("NATS node %s: /jsz: %w", nd.Name, err)
	}
	return &jsz, nil
}

// MetaLeader names the JetStream meta leader, as the first running node
// answers.
func (c *Cluster) MetaLeader() (string, error) {
	for _, nd := range c.Nodes {
		if !nd.Running() {
			continue
		}
		jsz, err := nd.meta()
		if err != nil {
			return "", err
		}
		if jsz.Meta.Leader == "" {
			return "", fmt.Errorf("NATS node %s knows no meta leader", nd.Name)
		}
		return jsz.Meta.Leader, nil
	}
	return "", errors.New("no NATS node is running")
}

// Clients returns the names of the client connections nd has now (from
// its /connz): a daemon's connection is named "multimodule <host>".
func (nd *Node) Clients() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/connz?limit=1024", nd.HTTPPort), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("NATS node %s: %w", nd.Name, err)
	}
	defer resp.Body.Close()
	var connz struct {
		Connections []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&connz); err != nil {
		return nil, fmt.Errorf("NATS node %s: /connz: %w", nd.Name, err)
	}
	names := make([]string, len(connz.Connections))
	for i, c := range connz.Connections {
		names[i] = c.Name
	}
	return names, nil
}

// healthy asks nd's /healthz, then JetStream through nd.
func (nd *Node) healthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/healthz", nd.HTTPPort), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("NATS node %s: %w", nd.Name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("NATS node %s: /healthz: %s", nd.Name, resp.Status)
	}
	nc, err := nats.Connect(nd.URL(), nats.Timeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("NATS node %s: connect: %w", nd.Name, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("NATS node %s: JetStream: %w", nd.Name, err)
	}
	return nil
}

func (c *Cluster) cleanup() {
	_, left := c.tracker.killAll(cleanupTimeout) // every node is ours to kill
	for _, nd := range c.Nodes {
		if p := nd.Proc(); p != nil {
			<-p.done
		}
	}
	if len(left) > 0 {
		c.T.Errorf("mmtest: NATS nodes still running after %v: %v", cleanupTimeout, left)
	}
}

// Box is one box of a cluster: an Env (its own state directory) whose
// commands and client use the cluster as host Host.
type Box struct {
	*Env
	Host    string
	Cluster *Cluster
	Daemon  *Proc // set by StartBox
}

// NewBox returns box host on c: an Env whose commands get --nats (every
// node), --host, --bus-replicas (c.Replicas) and a small --bus-max-bytes,
// and whose Client opens the cluster as that host.
func (c *Cluster) NewBox(t testing.TB, host string) *Box {
	t.Helper()
	e := NewEnv(t)
	e.Args = []string{"--nats=" + c.URLs(), "--host=" + host, fmt.Sprintf("--bus-replicas=%d", c.Replicas), "--bus-max-bytes=" + clusterBoxBytes}
	e.Bus = transit.Options{NATSURL: c.URLs(), Host: host, Replicas: c.Replicas, Capacity: transit.Capacity{Bytes: 64 << 20},
		// Not "multimodule <host>", the name of the box's daemon (Node.Clients).
		NATSOptions: []nats.Option{nats.Name("mmtest client " + host)}}
	return &Box{Env: e, Host: host, Cluster: c}
}

// StartBox starts a daemon as box host on c (NewBox), with args, and
// waits until it is ready.
func (c *Cluster) StartBox(t testing.TB, host string, args ...string) *Box {
	t.Helper()
	b := c.NewBox(t, host)
	b.Daemon = b.StartDaemon(args...)
	return b
}

// natsNodeMain runs one NATS node from the config file in args until
// SIGTERM or SIGINT (a test kills it with SIGKILL).
func natsNodeMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "mmtest NATS node: want one argument, the config file")
		return 2
	}
	opts, err := server.ProcessConfigFile(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "mmtest NATS node: %v\n", err)
		return 2
	}
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mmtest NATS node %s: %v\n", args[0], err)
		return 1
	}
	s.ConfigureLogger()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	s.Start()
	if !s.ReadyForConnections(60 * time.Second) {
		fmt.Fprintf(os.Stderr, "mmtest NATS node %s: not ready for connections within 60s\n", args[0])
		s.Shutdown()
		return 1
	}
	<-sigs
	s.Shutdown()
	s.WaitForShutdown()
	return 0
}
