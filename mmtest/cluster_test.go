package mmtest_test

import (
	"testing"
	"time"

	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/procid"
)

// TestClusterNodes: the nodes of a NewCluster are separate processes; a
// node killed with SIGKILL starts again (same ports, same store) and the
// cluster is ready again; at the end of the test every node is killed
// and reaped, also the restarted one.
func TestClusterNodes(t *testing.T) {
	var ids []procid.Identity
	t.Run("cluster", func(t *testing.T) {
		c := mmtest.NewCluster(t, 3)
		seen := map[int]bool{}
		for _, nd := range c.Nodes {
			pid := nd.Proc().PID()
			if seen[pid] {
				t.Fatalf("node %s shares pid %d with another node", nd.Name, pid)
			}
			seen[pid] = true
		}
		victim := c.Nodes[1]
		victim.Kill()
		if victim.Running() {
			t.Fatalf("node %s still runs after Kill", victim.Name)
		}
		c.WaitReady(60 * time.Second) // two of three: still a cluster
		victim.Start()
		c.WaitReady(60 * time.Second)
		for _, nd := range c.Nodes {
			id, err := procid.Of(nd.Proc().PID())
			if err != nil {
				t.Fatalf("node %s: %v", nd.Name, err)
			}
			ids = append(ids, id)
		}
	})
	gone(t, ids)
}
