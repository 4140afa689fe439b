package install

import (
	"strings"
	"testing"
)

func TestHelperArgs(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
		log  string
		err  bool
	}{
		{[]string{"a", "/run/d", "-o", "join=10.0.0.1,join=10.0.0.2,key_file=/k,gossip=lan,allow_other,_netdev,x-systemd.after=x"},
			"--name a --join 10.0.0.1 --join 10.0.0.2 --key-file /k --gossip lan --allow-other /run/d", defaultHelperLog, false},
		{[]string{"dlockfs", "/run/d", "-n", "-ofast-path,log=/l,defaults"}, "--fast-path /run/d", "/l", false},
		{[]string{"a", "/run/d", "-o", "quorum=none,state_dir=/var/lib/x"}, "--name a --quorum none --state-dir /var/lib/x /run/d", defaultHelperLog, false},
		{[]string{"a", "/run/d", "-o", "join"}, "", "", true},
		{[]string{"a", "/run/d", "-o", "debug=1"}, "", "", true},
		{[]string{"a"}, "", "", true},
		{[]string{"a", "/d", "-x"}, "", "", true},
	} {
		got, log, _, err := helperArgs(tt.args)
		if (err != nil) != tt.err || (!tt.err && (strings.Join(got, " ") != tt.want || log != tt.log)) {
			t.Errorf("helperArgs(%q) = %q, %q, %v; want %q, %q, error %v", tt.args, got, log, err, tt.want, tt.log, tt.err)
		}
	}
}
