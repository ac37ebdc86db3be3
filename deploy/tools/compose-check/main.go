// compose-check loads a Compose file with the Compose specification's own loader
// (github.com/compose-spec/compose-go, the library behind `docker compose config`): the file
// is validated against the Compose JSON schema, interpolated, normalised and checked for
// consistency (unknown services in depends_on, undefined volumes and networks, ...). It
// prints the services it found and exits non-zero on any error.
package main

import (
	"context"
	"fmt"
	"os"
	"sort"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check <docker-compose.yml>")
		os.Exit(2)
	}
	if err := check(os.Args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "compose-check: %v\n", err)
		os.Exit(1)
	}
}

func check(path string) error {
	options, err := cli.NewProjectOptions(
		[]string{path},
		cli.WithName("spillway"),
		cli.WithOsEnv,
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return err
	}
	names := project.ServiceNames()
	sort.Strings(names)
	fmt.Printf("%s: valid; %d services: %v; %d volumes\n", path, len(names), names, len(project.Volumes))
	return nil
}
