package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/bench"
	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/demo"
	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/install"
	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/node"
)

// commands returns the command table, in the order help lists it.
func commands() []cli.Command {
	return []cli.Command{
		node.Mount(),
		node.Status(),
		node.Lock(),
		node.Check(),
		node.Keygen(),
		install.Install(func() string { return cli.ManPage(commands()) }),
		install.Uninstall(),
		node.Keys(),
		node.Forget(),
		node.Break(),
		cli.Help(commands),
		demo.Command(),
		bench.Command(),
	}
}

func main() {
	if filepath.Base(os.Args[0]) == install.HelperName {
		os.Exit(install.RunMountHelper(os.Args[1:], os.Stderr))
	}
	os.Exit(cli.Run(context.Background(), commands(), os.Args[1:], os.Stdout, os.Stderr))
}
