package MultiModule;

# MultiModule: write a MultiModule exec task in Perl (core modules only).
#
# An exec task is an executable file in a directory given to the daemon
# with -p DIR; the file's name is the task's name. It speaks
# newline-delimited JSON with the host on STDIN/STDOUT
# (docs/exec-protocol.md). This module does the protocol; you write the
# handlers:
#
#   #!/usr/bin/env perl
#   use strict; use warnings;
#   use FindBin; use lib $FindBin::RealBin;
#   use MultiModule;
#
#   MultiModule::run(
#       stateful => 1,
#       set_config => sub { my ($t, $config) = @_; },
#       message => sub {
#           my ($t, $msg) = @_;
#           $t->{state}{ct}++;
#           $msg->{ct} = $t->{state}{ct};
#           $t->emit($msg);
#       },
#   );
#
# $t is the task: $t->{config}, $t->{state} (a hash ref, sent back after
# every request that changed it), $t->{name}, and the methods emit, send,
# out, log, debug, alert, error, recur, del_recurs. A handler that dies
# fails that request only (the host reports it). Anything printed to
# STDOUT by the handlers would break the protocol, so STDOUT is pointed at
# STDERR while they run; STDERR goes to the host's log channel.
#
# Everything a handler writes is sent with the acknowledgement of its
# request; with protocol 2 the host may send several requests at once: they
# are all handled, in order, and their answers sent in one write.

use strict;
use warnings;
use JSON::PP ();
use IO::Handle;
use Time::HiRes ();

our $VERSION = '2';
our @PROTOCOLS = (1, 2);

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

sub new {
    my ($class, %h) = @_;
    my $self = bless {
        name     => $ENV{MULTIMODULE_TASK} || do { my $n = $0; $n =~ s{.*/}{}; $n },
        process  => $ENV{MULTIMODULE_PROCESS} || '',
        stateful => $h{stateful} ? 1 : 0,
        handlers => \%h,
        config   => {},
        state    => {},
        pending  => [],
        recurs   => {},
    }, $class;
    return $self;
}

sub _write { my ($self, $rec) = @_; push @{ $self->{pending} }, $JSON->encode($rec); }

sub emit { my ($self, $msg) = @_; $self->_write({ type => 'emit', message => $msg }); }

sub send {
    my ($self, $queue, $msg, $destination) = @_;
    my $rec = { type => 'send', queue => $queue, message => $msg };
    $rec->{destination} = $destination if defined $destination && length $destination;
    $self->_write($rec);
}

sub out {
    my ($self, $channel, $text, %details) = @_;
    my $rec = { type => 'out', channel => $channel, text => "$text" };
    $rec->{details} = \%details if %details;
    $self->_write($rec);
}
sub log   { my $self = shift; $self->out('log',   @_); }
sub debug { my $self = shift; $self->out('debug', @_); }
sub alert { my $self = shift; $self->out('alert', @_); }
sub error { my $self = shift; $self->out('error', @_); }

# recur($name, $seconds, $code): $code->($t) every $seconds (the config's
# intervals.<name> overrides it); one schedule per name.
sub recur {
    my ($self, $name, $seconds, $code) = @_;
    $self->{recurs}{$name} = $code;
    $self->_write({ type => 'recur', name => $name, interval => $seconds + 0 });
}

sub del_recurs {
    my ($self) = @_;
    $self->{recurs} = {};
    $self->_write({ type => 'del_recurs' });
}

sub save_state { my ($self) = @_; $self->_write({ type => 'state', state => $self->{state} }); }

# During a burst of requests, answers are written at least this often
# (seconds), so that the host sees each ack well within its timeout.
our $FLUSH_EVERY = 0.05;

# run(%handlers): message => sub, set_config => sub (optional), stateful => 0|1.
sub run {
    my $self = MultiModule->new(@_);
    open(my $out, '>&', \*STDOUT) or die "MultiModule: stdout: $!";
    binmode $out;
    open(STDOUT, '>&', \*STDERR) or die "MultiModule: redirect stdout: $!";
    my $put = sub { $out->print(join("\n", @_), "\n"); $out->flush; };
    $put->($JSON->encode({ type => 'hello', name => $self->{name}, protocol => [@PROTOCOLS],
        stateful => $self->{stateful} ? JSON::PP::true : JSON::PP::false }));
    return if ($ENV{MULTIMODULE_MODE} || '') eq 'describe';
    binmode STDIN;
    my $flush = sub { $put->(@{ $self->{pending} }); $self->{pending} = []; };
    my $synced;
    my $buf = '';
    # Everything the host has written so far is read at once and handled,
    # and the answers go back in one write before the next wait (protocol
    # 2 lets the host have several requests in flight).
    while (1) {
        my $had = length $buf;
        my $n = sysread(STDIN, $buf, 1 << 16, $had);
        if (!defined $n) {
            next if $!{EINTR};
            die "MultiModule: read: $!";
        }
        if ($n == 0) {
            $self->_handle($buf, \$synced) if $buf =~ /\S/;
            last;
        }
        next if index($buf, "\n", $had) < 0;
        my $lines = substr($buf, 0, rindex($buf, "\n") + 1, '');
        my $flushed = Time::HiRes::time();
        for my $line (split /\n/, $lines) {
            $self->_handle($line, \$synced) if $line =~ /\S/;
            if (@{ $self->{pending} } && Time::HiRes::time() - $flushed > $FLUSH_EVERY) {
                $flush->();
                $flushed = Time::HiRes::time();
            }
        }
        $flush->() if @{ $self->{pending} };
    }
    $flush->() if @{ $self->{pending} };
    return;
}

# _handle($line, \$synced): one request line; its records and ack go to
# $self->{pending}.
sub _handle {
    my ($self, $line, $synced) = @_;
    my $req = eval { $JSON->decode($line) };
    if (!$req || ref $req ne 'HASH') {
        print STDERR "MultiModule.pm: unreadable line from the host: $line\n";
        return;
    }
    my $type = $req->{type} // '';
    my $id = $req->{id};
    if ($type eq 'welcome') { $self->{protocol} = $req->{protocol}; return; }
    if ($type eq 'error') { print STDERR "MultiModule.pm: the host refused us: $req->{text}\n"; exit 1; }
    my $err;
    my $ok = eval {
        if ($type eq 'message') {
            $self->{handlers}{message}->($self, $req->{message} || {}) if $self->{handlers}{message};
        } elsif ($type eq 'state') {
            $self->{state} = $req->{state} || {};
            $$synced = $JSON->encode($self->{state});
        } elsif ($type eq 'config') {
            my $cfg = $req->{config} || {};
            $self->{handlers}{set_config}->($self, $cfg) if $self->{handlers}{set_config};
            $self->{config} = $cfg;
        } elsif ($type eq 'tick') {
            my $code = $self->{recurs}{ $req->{name} // '' };
            $code->($self) if $code;
        } else {
            $err = "MultiModule.pm does not know request type '$type'";
        }
        1;
    };
    if (!$ok) {
        $err = "$@" || 'died';
        $err =~ s/\s+\z//;
        print STDERR "MultiModule.pm: $type handler failed: $err\n";
    }
    if ($self->{stateful} && $type ne 'state') {
        my $now = $JSON->encode($self->{state});
        if (!defined $$synced || $now ne $$synced) {
            $$synced = $now;
            $self->save_state;
        }
    }
    return unless defined $id;
    my $ack = { type => 'ack', id => $id };
    $ack->{error} = $err if defined $err;
    $self->_write($ack);
    return;
}

1;
