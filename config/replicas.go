package config

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
)

// AckAuto is AckReplicas's "auto": wait for as many replicas as the master reports
// connected, which is none on a standalone Redis.
const AckAuto AckReplicas = -1

// AckReplicas is redis.ack_replicas: how many replicas must hold an enqueue (Redis WAIT)
// before MiiTel gets its 2xx. "auto" (AckAuto, the default) or a number, 0 turning it off.
type AckReplicas int

// UnmarshalYAML takes "auto" or a non-negative integer; an error carries the value's
// position, so Load reports file:line:col.
func (a *AckReplicas) UnmarshalYAML(node ast.Node) error {
	var err error
	switch n := node.(type) {
	case *ast.NullNode:
		*a = AckAuto
		return nil
	case *ast.IntegerNode:
		err = a.UnmarshalText([]byte(n.GetToken().Value))
	case *ast.StringNode:
		err = a.UnmarshalText([]byte(n.Value))
	default:
		err = fmt.Errorf("want auto or a number of replicas (0 turns waiting off), got %s", node.String())
	}
	if err != nil {
		return &yaml.SyntaxError{Message: err.Error(), Token: node.GetToken()}
	}
	return nil
}

// UnmarshalText is the same for MCS_REDIS_ACK_REPLICAS.
func (a *AckReplicas) UnmarshalText(b []byte) error {
	if string(b) == "auto" {
		*a = AckAuto
		return nil
	}
	n, err := strconv.Atoi(string(b))
	if err != nil || n < 0 {
		return fmt.Errorf("want auto or a number of replicas (0 turns waiting off), got %q", b)
	}
	*a = AckReplicas(n)
	return nil
}

// String is "auto" or the number.
func (a AckReplicas) String() string {
	if a < 0 {
		return "auto"
	}
	return strconv.Itoa(int(a))
}

// MarshalJSON shows "auto" in the effective configuration rather than -1.
func (a AckReplicas) MarshalJSON() ([]byte, error) {
	if a < 0 {
		return json.Marshal("auto")
	}
	return json.Marshal(int(a))
}
