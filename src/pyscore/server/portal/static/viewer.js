// The genome viewer: igv.js (served by this server) showing one file's region, read from this
// server's htsget (BAM, VCF) or from signed storage URLs with the file's index (CRAM, and the
// others when asked), each fetched again before it expires. The sign-in cookie goes with the
// requests this page makes itself (the Pyscore-Portal header says they are the portal's).
"use strict";
(() => {
  const PORTAL = { "Pyscore-Portal": "1" };
  const box = document.getElementById("viewer");
  const message = document.getElementById("viewer-message");
  const regionBox = document.getElementById("region");
  if (!box) return;
  const config = JSON.parse(box.dataset.config);

  const say = (text) => {
    message.textContent = text;
    message.hidden = false;
  };
  const reasonOf = (error) => {
    const text = (error && (error.message || String(error))) || "unknown error";
    return text.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim();
  };

  async function refusal(response) {
    try {
      const body = await response.json();
      return body.message || body.msg || (body.htsget && body.htsget.message) || response.statusText;
    } catch (e) {
      return response.statusText;
    }
  }

  // A function igv.js calls for each read: the signed URL of an object, asked of DRS again once
  // 80% of its lifetime has passed (so a page left open keeps reading).
  const renewals = { count: 0 };
  function signedUrl(objectId) {
    let url = null;
    let until = 0;
    let pending = null;
    return () => {
      if (url && Date.now() < until) return url;
      if (!pending) {
        const asked = Date.now();
        pending = fetch(`${config.drs}${encodeURIComponent(objectId)}/access/https`, { headers: PORTAL })
          .then(async (response) => {
            if (!response.ok) throw new Error(`${response.status}: ${await refusal(response)}`);
            return response.json();
          })
          .then((body) => {
            url = body.url;
            until = asked + config.urlLifetime * 800;
            renewals.count += 1;
            return url;
          })
          .finally(() => {
            pending = null;
          });
      }
      return pending;
    };
  }

  function reference() {
    if (config.reference) {
      return {
        id: "reference",
        name: "Reference",
        fastaURL: signedUrl(config.reference.fasta),
        indexURL: signedUrl(config.reference.index),
      };
    }
    return { id: "sequences", name: config.name, format: "chromsizes", fastaURL: config.chromSizes };
  }

  function track() {
    const common = { type: config.track, format: config.format, name: config.name };
    if (config.track === "alignment") {
      Object.assign(common, { samplingDepth: 10000, displayMode: "EXPANDED" });
    }
    if (config.via === "htsget") {
      // the ticket request carries the header; its data URLs are signed and need nothing
      return { ...common, sourceType: "htsget", url: config.htsget, headers: PORTAL };
    }
    return { ...common, url: signedUrl(config.objectId), indexURL: signedUrl(config.indexId) };
  }

  // The address names the region shown, so it can be shared as it is.
  function follow(browser) {
    browser.on("locuschange", () => {
      const loci = browser.currentLoci(); // a string for one view, a list for several
      const locus = Array.isArray(loci) ? loci[0] : loci;
      if (!locus) return;
      const url = new URL(window.location.href);
      url.searchParams.set("region", locus);
      url.searchParams.set("via", config.via);
      window.history.replaceState(null, "", url);
      if (regionBox) regionBox.value = locus;
    });
  }

  // What igv.js holds for the region [start, end) (0-based) of the file's track: the records
  // that overlap it, counted as samtools/bcftools count a region's (for tests and curious users).
  function records(chr, start, end) {
    const view = browser_.trackViews.find((v) => v.track && v.track.type === config.track);
    const cache = view && view.viewports[0].featureCache;
    if (!cache || !cache.features) return null;
    const found = cache.features;
    if (config.track === "alignment") {
      const all = found.allAlignments().filter((a) => a.chr === chr);
      return {
        loaded: [found.chr, found.start, found.end],
        downsampled: found.downsampledIntervals.length,
        count: all.filter((a) => a.start < end && a.start + a.lengthOnRef > start).length,
      };
    }
    const all = found.filter((v) => v.chr === chr);
    return {
      loaded: [cache.chr, cache.bpStart, cache.bpEnd],
      count: all.filter((v) => v.start < end && v.end > start).length,
    };
  }

  let browser_ = null;
  async function show() {
    if (typeof igv === "undefined") {
      say("The genome viewer (igv.js) did not load.");
      return;
    }
    try {
      browser_ = await igv.createBrowser(box, {
        reference: reference(),
        locus: config.locus,
        loadDefaultGenomes: false,
        showCircularViewButton: false,
        queryParametersSupported: false,
      });
    } catch (error) {
      say(`The reference genome could not be read: ${reasonOf(error)}`);
      throw error;
    }
    try {
      await browser_.loadTrack(track());
    } catch (error) {
      say(`${config.name} could not be read: ${reasonOf(error)}`);
      throw error;
    }
    follow(browser_);
  }

  const ready = show();
  window.pyscoreViewer = {
    ready,
    renewals,
    records,
    get browser() {
      return browser_;
    },
  };
  ready.catch(() => {}); // said on the page; the promise stays rejected for whoever waits on it
})();
