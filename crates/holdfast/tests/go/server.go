// A tiny net/http server for holdfast's proxy-mode upgrade tests: an unmodified
// service that binds a fixed address by itself (no LISTEN_FDS, no SO_REUSEPORT, no
// readiness protocol) and stops at once on SIGTERM, as many Go programs do.
//
// Every response carries X-Build-Id: -build. /health answers 200 "ok".
// -version prints "go-server (build ID)" and exits 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	build := flag.String("build", "dev", "build id sent as X-Build-Id")
	version := flag.Bool("version", false, "print the build and exit")
	flag.Parse()
	if *version {
		fmt.Printf("go-server (build %s)\n", *build)
		return
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "go-server build=%s pid=%d\n", *build, os.Getpid())
	})
	server := &http.Server{
		Addr: *addr,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Build-Id", *build)
			mux.ServeHTTP(w, r)
		}),
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		// Shutdown closes idle keep-alive connections at once: a client sending on
		// one at that moment sees it closed. Upgrades must not depend on the
		// service draining well.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		server.Shutdown(ctx)
	}()
	log.Printf("go-server build=%s listening on %s", *build, *addr)
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
