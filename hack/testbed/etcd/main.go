// Command etcd is the etcd server at the version Kubernetes pins, built from
// Go modules so the test bed needs no downloaded binaries.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
