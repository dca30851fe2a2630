import { main } from "../../kit/server.ts";
import { productService } from "./service.ts";

await main(productService);
