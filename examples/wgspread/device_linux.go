package main

import (
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	wgconn "golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/flowspread/flowspread/conn/host"
	"github.com/flowspread/flowspread/conn/wireguard"
)

// serve runs the interface as wireguard-go does in the foreground: it
// creates the TUN device, opens the UAPI socket, and serves wg until a
// signal, a UAPI failure, or the interface's deletion closes the device.
// Everything it set up is gone when it returns.
func serve(opts options, logger *log.Logger) (err error) {
	// The local route first: wireguard-go opens the Bind as soon as the
	// interface is up and has a listen port, and spread datagrams must
	// reach it from then on.
	if opts.localRoute && opts.cfg.Range.Prefix.IsValid() && !opts.stockBind {
		remove, err := host.AddLocalRoute(opts.cfg.Range.Prefix)
		if err != nil {
			return fmt.Errorf("add the local route for %v (ip -6 route add local %v dev lo): %w", opts.cfg.Range.Prefix, opts.cfg.Range.Prefix, err)
		}
		defer func() {
			if rerr := remove(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("remove the local route for %v: %w", opts.cfg.Range.Prefix, rerr))
			}
		}()
	}

	tdev, err := tun.CreateTUN(opts.iface, device.DefaultMTU)
	if err != nil {
		return fmt.Errorf("create TUN device %s (needs CAP_NET_ADMIN and /dev/net/tun): %w", opts.iface, err)
	}
	name, err := tdev.Name()
	if err != nil {
		tdev.Close()
		return fmt.Errorf("TUN device name: %w", err)
	}
	uapiFile, err := ipc.UAPIOpen(name)
	if err != nil {
		tdev.Close()
		return fmt.Errorf("open the UAPI socket for %s: %w", name, err)
	}
	uapi, err := ipc.UAPIListen(name, uapiFile)
	uapiFile.Close() // the listener holds its own descriptor
	if err != nil {
		tdev.Close()
		return fmt.Errorf("listen on the UAPI socket for %s: %w", name, err)
	}

	wgLogger := device.NewLogger(logLevel(os.Getenv("LOG_LEVEL")), fmt.Sprintf("(%s) ", name))
	var dev *device.Device
	var bind *wireguard.Bind
	if opts.stockBind {
		dev = device.NewDevice(tdev, wgconn.NewStdNetBind(), wgLogger)
	} else {
		bind = wireguard.NewBind(opts.cfg)
		dev = device.NewDevice(wireguard.WrapTUN(tdev, bind), bind, wgLogger)
	}
	// Close removes the interface with its TUN device; the listener
	// unlinks the socket.
	defer dev.Close()
	defer uapi.Close()

	uapiErr := make(chan error, 1)
	go func() {
		for {
			c, err := uapi.Accept()
			if err != nil {
				uapiErr <- err
				return
			}
			go dev.IpcHandle(c)
		}
	}()

	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(term)

	hup := make(chan os.Signal, 1)
	if opts.peersFile != "" && bind != nil {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}

	logger.Printf("%s ready: configure it with wg (socket /var/run/wireguard/%s.sock); %s", name, name, describe(opts))
wait:
	for {
		select {
		case <-hup:
			reloadPeers(opts, bind, logger)
		case sig := <-term:
			logger.Printf("%v: shutting down", sig)
			break wait
		case err := <-uapiErr:
			if !errors.Is(err, net.ErrClosed) {
				logger.Printf("UAPI socket: %v: shutting down", err)
			}
			break wait
		case <-dev.Wait():
			logger.Printf("%s closed: shutting down", name)
			break wait
		}
	}
	if bind == nil {
		return nil
	}
	s := bind.Stats()
	logger.Printf("sent %d spread, %d control, %d unmatched; %d CE marked, %d CE dropped",
		s.SentSpread, s.SentControl, s.SentUnmatched, s.CEMarked, s.CEDropped)
	if c := bind.Conn(); c != nil {
		cs := c.Stats()
		logger.Printf("conn: wrote %d datagrams (%d unspread, %d GSO sends, %d errors); read %d (%d from strangers), dropped %d foreign, %d outside the range, %d truncated",
			cs.Sent, cs.SentUnspread, cs.GSOSends, cs.SendErrors, cs.Received, cs.ReceivedUnknown,
			cs.DroppedForeign, cs.DroppedOutsideRange, cs.RecvTruncated)
		logger.Printf("paths: %d datagrams waited on the canonical pair, %d probe copies, %d pairs opened; %d packets observed, %d unmatched",
			cs.SentWaiting, cs.SentProbes, cs.PathsOpened, s.Observed, s.RecvUnmatched)
	}
	return nil
}

// logLevel maps LOG_LEVEL as wireguard-go does.
func logLevel(s string) int {
	switch s {
	case "verbose", "debug":
		return device.LogLevelVerbose
	case "silent":
		return device.LogLevelSilent
	}
	return device.LogLevelError
}
