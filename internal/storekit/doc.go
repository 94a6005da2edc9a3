// Package storekit holds what the session stores (sqlite and postgres) share:
// the Hub that fans session changes out to watchers, the list cursor, and the
// checks and domain errors every store returns alike. The adapters never
// import each other, so their common code lives here.
package storekit
