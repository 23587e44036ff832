package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// errHelp ends a command that printed its help (exit 0); errUsage one
// whose command line was bad, already reported (exit 2).
var (
	errHelp  = errors.New("help shown")
	errUsage = errors.New("bad command line")
)

// parseFlags parses args with fs. -h prints the command's flags to stdout
// and returns errHelp; a bad flag is reported with the flags on stderr and
// returns errUsage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		printFlags(os.Stdout, fs)
		return errHelp
	}
	fmt.Fprintf(os.Stderr, "hodei %s: %v\n", fs.Name(), err)
	printFlags(os.Stderr, fs)
	return errUsage
}

func printFlags(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: hodei %s [flags]\n\nFlags:\n", fs.Name())
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// exitCode maps the error a command ended with to the process exit code,
// printing it when it was not reported yet.
func exitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintln(os.Stderr, "hodei:", err)
	return 1
}
