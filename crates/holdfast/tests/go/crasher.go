// A Go service that dies the ways Go services die, for the crash report tests:
//
//	crasher panic   panics with an index out of range two calls below main
//	crasher hang    blocks for good in main.stuck while a worker sleeps (SIGQUIT then
//	                prints both goroutines' stacks and exits 2)
package main

import (
	"fmt"
	"os"
	"time"
)

//go:noinline
func lookup(items []int, i int) int {
	return items[i]
}

//go:noinline
func handle(i int) int {
	return lookup([]int{1, 2, 3}, i)
}

//go:noinline
func stuck(never chan struct{}) {
	<-never
}

func worker() {
	for {
		time.Sleep(time.Second)
	}
}

func main() {
	mode := "panic"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	fmt.Println("crasher up:", mode)
	switch mode {
	case "panic":
		time.Sleep(200 * time.Millisecond)
		fmt.Println("handling request 5")
		fmt.Println(handle(len(os.Args) + 3))
	case "hang":
		go worker()
		fmt.Println("hanging in main.stuck")
		stuck(make(chan struct{}))
	}
}
