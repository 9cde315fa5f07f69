package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// capture yields the frames of a pcap or pcapng file with their link type.
type capture struct {
	read func() ([]byte, gopacket.CaptureInfo, error)
	link func(ci gopacket.CaptureInfo) layers.LinkType
}

// pcapngMagic starts every pcapng file (its Section Header Block type).
var pcapngMagic = []byte{0x0a, 0x0d, 0x0d, 0x0a}

func openCapture(r io.Reader) (*capture, error) {
	br := bufio.NewReader(r)
	head, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("not a pcap or pcapng capture: %w", err)
	}
	if bytes.Equal(head, pcapngMagic) {
		ng, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return nil, fmt.Errorf("reading pcapng: %w", err)
		}
		return &capture{
			read: ng.ReadPacketData,
			link: func(ci gopacket.CaptureInfo) layers.LinkType {
				if ifc, err := ng.Interface(ci.InterfaceIndex); err == nil {
					return ifc.LinkType
				}
				return ng.LinkType()
			},
		}, nil
	}
	pr, err := pcapgo.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("not a pcap or pcapng capture: %w", err)
	}
	lt := pr.LinkType()
	return &capture{
		read: pr.ReadPacketData,
		link: func(gopacket.CaptureInfo) layers.LinkType { return lt },
	}, nil
}

// next returns the next frame and its link type, or io.EOF at the end.
func (c *capture) next() ([]byte, layers.LinkType, error) {
	data, ci, err := c.read()
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) && data == nil {
		return nil, 0, io.EOF
	}
	if err != nil {
		return nil, 0, err
	}
	return data, c.link(ci), nil
}
