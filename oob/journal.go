package oob

import (
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// IsJournal reports whether w is the systemd journal's stream: an
// *os.File whose device and inode are those the JOURNAL_STREAM variable
// names ("<device>:<inode>", set by systemd for a service whose output
// goes to the journal, see systemd.exec(5)). Comparing them, rather than
// trusting the variable alone, keeps a child process whose output was
// redirected elsewhere (an external task's log file) from taking its file
// for the journal.
func IsJournal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && uint64(st.Dev) == d && uint64(st.Ino) == i
}

// journalPriority is the channel's syslog priority prefix (sd-daemon(3))
// and the start of its continuation lines: alert is LOG_ALERT, error
// LOG_ERR, log LOG_INFO, debug LOG_DEBUG, any other channel LOG_NOTICE.
func journalPriority(channel string) (prefix, cont string) {
	switch channel {
	case ChannelAlert:
		return "<1>", "\n<1>\t"
	case ChannelError:
		return "<3>", "\n<3>\t"
	case ChannelLog:
		return "<6>", "\n<6>\t"
	case ChannelDebug:
		return "<7>", "\n<7>\t"
	}
	return "<5>", "\n<5>\t"
}

// appendJournal appends r as a journal line: the human line without its
// time (the journal stamps each entry) behind the channel's priority:
//
//	<3>1234 ERROR Task: text k=v
//
// The journal makes an entry of each line, so each continuation line of
// a multi-line text carries the priority too (then a tab).
func appendJournal(b []byte, r Record) []byte {
	prefix, cont := journalPriority(r.Channel)
	b = append(b, prefix...)
	return appendLine(b, r, cont)
}
