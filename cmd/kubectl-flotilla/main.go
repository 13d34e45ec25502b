// Command kubectl-flotilla is Flotilla's kubectl plugin (`kubectl flotilla`,
// also installed as kubectl-amc so scripts written for ACK One run unchanged).
package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/flotilla-dev/flotilla/pkg/cli"
)

func main() {
	name := strings.Replace(filepath.Base(os.Args[0]), "kubectl-", "kubectl ", 1)
	os.Exit(cli.Main(name, os.Args[1:], os.Stdout, os.Stderr))
}
