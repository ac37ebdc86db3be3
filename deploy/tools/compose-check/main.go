// compose-check loads a Compose file with the Compose specification's own loader
// (github.com/compose-spec/compose-go, the library behind `docker compose config`): the file
// is validated against the Compose JSON schema, interpolated, normalised and checked for
// consistency (unknown services in depends_on, undefined volumes and networks, ...). It
// prints the services it found (with -json: the loaded project, as `docker compose config
// --format json` would) and exits non-zero on any error.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	asJSON := flag.Bool("json", false, "print the loaded project as JSON")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: compose-check [-json] <docker-compose.yml>")
		os.Exit(2)
	}
	if err := check(flag.Arg(0), *asJSON); err != nil {
		fmt.Fprintf(os.Stderr, "compose-check: %v\n", err)
		os.Exit(1)
	}
}

func check(path string, asJSON bool) error {
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
	if asJSON {
		json, err := project.MarshalJSON()
		if err != nil {
			return err
		}
		fmt.Println(string(json))
		return nil
	}
	names := project.ServiceNames()
	sort.Strings(names)
	fmt.Printf("%s: valid; %d services: %v; %d volumes\n", path, len(names), names, len(project.Volumes))
	return nil
}
