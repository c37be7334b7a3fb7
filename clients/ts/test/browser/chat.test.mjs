// The example chat page in real Chromium: two people see each other, see
// each other typing, and talk; a page that leaves is gone from the other's
// list.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { startNode } from "../helpers.mjs";
import { launch, page, site } from "./site.mjs";

let node, browser, dir;
before(async () => {
  dir = await site();
  node = await startNode({ args: ["--static-dir", dir.dir] });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await node?.stop();
  dir?.remove();
});

const presence = (p) => p.locator("#presence").textContent();

test("two pages chat with presence and typing", async () => {
  const ann = await page(browser);
  const bob = await page(browser);
  await ann.goto(`${node.base}/app/?user=ann&room=chat:demo`);
  await ann.waitForSelector('#status[data-state="connected"]');
  await bob.goto(`${node.base}/app/?user=bob&room=chat:demo`);
  await bob.waitForSelector('#status[data-state="connected"]');

  await ann.waitForFunction(() => document.querySelector("#presence").textContent.includes("bob"));
  await bob.waitForFunction(() => document.querySelector("#presence").textContent.includes("ann"));
  assert.match(await presence(bob), /bob \(you\)/);

  // Bob types: Ann sees it, Bob does not see himself.
  await bob.locator("#text").pressSequentially("hel");
  await ann.waitForFunction(() => document.querySelector("#typing").textContent === "bob is typing…");
  assert.equal(await bob.locator("#typing").textContent(), "");

  // Bob sends: both see it once, and Ann's typing line clears.
  await bob.locator("#text").pressSequentially("lo ann");
  await bob.locator("#text").press("Enter");
  const line = (p) => p.waitForFunction(() => [...document.querySelectorAll("#messages li")].map((li) => li.textContent));
  await ann.waitForFunction(() => document.querySelector("#messages").textContent.includes("hello ann"));
  await bob.waitForFunction(() => document.querySelector("#messages").textContent.includes("hello ann"));
  assert.deepEqual(await (await line(ann)).jsonValue(), ["bobhello ann"]);
  assert.equal(await ann.locator("#typing").textContent(), "");

  // Ann answers.
  await ann.locator("#text").fill("hi bob");
  await ann.locator("#text").press("Enter");
  await bob.waitForFunction(() => document.querySelectorAll("#messages li").length === 2);
  assert.deepEqual(await (await line(bob)).jsonValue(), ["bobhello ann", "annhi bob"]);

  // Ann leaves: Bob's list drops her.
  await ann.context().close();
  await bob.waitForFunction(() => !document.querySelector("#presence").textContent.includes("ann"));
  assert.deepEqual(bob.errors, []);
});

test("a late joiner gets the room's history", async () => {
  const cy = await page(browser);
  await cy.goto(`${node.base}/app/?user=cy&room=chat:demo`);
  await cy.waitForFunction(() => document.querySelectorAll("#messages li").length >= 2);
  const texts = await cy.evaluate(() => [...document.querySelectorAll("#messages li")].map((li) => li.textContent));
  assert.deepEqual(texts, ["bobhello ann", "annhi bob"]);
  await cy.context().close();
});
