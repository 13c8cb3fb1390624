package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/multimodule/multimodule/store"
)

// scrapeCounts are the /metrics scrapes of a measured window: done is
// every scrape started, failed those without a 200 and a whole body.
type scrapeCounts struct {
	done, failed int64
}

// scraper GETs the daemon's /metrics at a fixed interval, as a
// monitoring system would, discarding the body.
type scraper struct {
	cancel context.CancelFunc
	finish chan struct{}
	counts scrapeCounts
	first  error // the first failure
}

// startScrape starts scraping when opts.ScrapeMetrics asks for it (nil
// otherwise): once at once, then every interval until stop.
func (e *env) startScrape(ctx context.Context) (*scraper, error) {
	every := e.opts.ScrapeMetrics
	if every <= 0 {
		return nil, nil
	}
	st, err := store.Open(e.state)
	if err != nil {
		return nil, err
	}
	var info *store.HTTPInfo
	if err := poll(ctx, 30*time.Second, func() error {
		info, err = st.LoadHTTPInfo()
		if err == nil && info == nil {
			err = fmt.Errorf("no %s yet", store.HTTPFile)
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("daemon HTTP listener: %w", err)
	}
	url := strings.TrimSuffix(info.URL, "/") + "/metrics"
	sctx, cancel := context.WithCancel(ctx)
	s := &scraper{cancel: cancel, finish: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(s.finish)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			err := scrapeOnce(sctx, client, url)
			if sctx.Err() != nil {
				return // cut short by stop: not counted
			}
			s.counts.done++
			if err != nil {
				s.counts.failed++
				if s.first == nil {
					s.first = err
				}
			}
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s, nil
}

// stop ends the scraping and returns its counts and first failure. A
// nil scraper (scraping off) returns zeros.
func (s *scraper) stop() (scrapeCounts, error) {
	if s == nil {
		return scrapeCounts{}, nil
	}
	s.cancel()
	<-s.finish
	return s.counts, s.first
}

func scrapeOnce(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("GET %s: read body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
