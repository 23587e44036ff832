package kubetest

import (
	"context"
	"io"
	"os"
	"path/filepath"
)

// AgentImage is the image that, on the Node of an Env, holds the hodei
// binary at the path the provider's init container copies it from.
const AgentImage = "hodei:dev"

// Env is a Cluster and a running Node whose AgentImage holds a hodei
// binary.
type Env struct {
	*Cluster
	Node   *Node
	cancel context.CancelFunc
	done   chan error
	dir    string
}

// StartEnv starts an API server and a node under a new directory of
// dir; hodeiBin is the binary the node's AgentImage holds at agentPath.
// Pods' output goes to output. Stop stops it all.
func StartEnv(binDir, dir, hodeiBin, agentPath string, output io.Writer) (*Env, error) {
	d, err := os.MkdirTemp(dir, "hodei-kube")
	if err != nil {
		return nil, err
	}
	root := filepath.Join(d, "image-hodei")
	if err := os.MkdirAll(filepath.Join(root, filepath.Dir(agentPath)), 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink(hodeiBin, filepath.Join(root, agentPath)); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Start(ctx, binDir, d, io.Discard)
	if err != nil {
		cancel()
		os.RemoveAll(d)
		return nil, err
	}
	e := &Env{Cluster: c, cancel: cancel, done: make(chan error, 1), dir: d}
	e.Node = NewNode(NodeConfig{Client: c.Client, Images: map[string]string{AgentImage: root}, Dir: d, Output: output})
	go func() { e.done <- e.Node.Run(ctx) }()
	return e, nil
}

// Stop stops the node (killing its pods), the API server and etcd.
func (e *Env) Stop() {
	e.cancel()
	<-e.done
	e.Cluster.Stop()
	os.RemoveAll(e.dir)
}
