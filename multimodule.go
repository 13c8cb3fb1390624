// Package multimodule is the entry point for building a MultiModule binary.
//
// The stock binary is cmd/multimodule. To ship your own tasks compiled in,
// write a main package that imports your task packages (which register
// themselves with task.Register from init) and calls Main:
//
//	package main
//
//	import (
//		"os"
//
//		"github.com/multimodule/multimodule"
//		_ "example.com/mytasks"
//	)
//
//	func main() { os.Exit(multimodule.Main()) }
//
// This package is the application's door: the only public package that
// imports internal/ (the daemon and the command line). The libraries
// (message, match, transform, router, transit, task, host, store,
// supervise, monitor, oob, procid, trust, observe) import nothing
// internal.
package multimodule

import "github.com/multimodule/multimodule/internal/cli"

// Main runs the multimodule command line (daemon and subcommands) with the
// process' arguments and returns the exit code.
func Main() int { return cli.Main() }
