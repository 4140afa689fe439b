package node

import (
	"net"
	"os"
)

// sdNotify sends state (READY=1, STOPPING=1, STATUS=...) to the service
// manager over $NOTIFY_SOCKET, the sd_notify(3) protocol: one datagram
// on a unix socket ("@..." is in the abstract namespace). Without
// NOTIFY_SOCKET (not under systemd Type=notify) it does nothing.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
